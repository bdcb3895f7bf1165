// The OpLog worker client: the Go SDK (services/oplog/oplogclient) for
// Node, with the same guarantees.
//
// log() never blocks, never throws and does no I/O: it stamps the entry
// with an id (UUIDv7), its time and the active span's trace context,
// sanitises its text and redacts its payloads (the Go rules, the same
// vectors), and puts it in a bounded buffer. Flushers send the buffer over
// one client-streaming Ingest call per flush, a batch when it holds the
// flush size or when its oldest entry has waited the linger, and retry
// with exponential backoff and jitter until the server acknowledges; the
// server acknowledges only committed rows and recognises resent ids, so a
// retry never stores a row twice. When the buffer is full the oldest
// entries are dropped and counted. close() flushes what is left.

import { randomFillSync } from "node:crypto";
import { createRequire } from "node:module";
import { create } from "@bufbuild/protobuf";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Client, Transport } from "@connectrpc/connect";
import { Outcome } from "./gen/platforma/common/v1/common_pb.js";
import type { AuthType } from "./gen/platforma/common/v1/common_pb.js";
import {
  IngestRequestSchema,
  OpLogService,
  OperationLogSchema,
  OperationType,
} from "./gen/platforma/oplog/v1/oplog_service_pb.js";
import type { IngestResponse, OperationLog } from "./gen/platforma/oplog/v1/oplog_service_pb.js";
import { Keys, PLACEHOLDER, defaultKeySet } from "./redact.js";
import { Code as CodeKind, Identifier, Message, UserAgent, freeText, sanitize } from "./sanitize.js";
import { connect } from "./transport.js";
import type { ConnectOptions, Connection } from "./transport.js";
import { retryDelayMs } from "./retry.js";

/** One operation to log. Only userId, operationType and outcome are required. */
export interface Entry {
  /** UUID of the platforma user. */
  userId: string;
  platformAccountId?: string;
  operationType: OperationType;
  resourceId?: string;
  outcome?: Outcome;
  errorCode?: number;
  errorType?: string;
  errorMessage?: string;
  /** Sent when positive (track() always sets it). */
  executionTimeMs?: number;
  retryCount?: number;
  authTypeDetected?: AuthType;
  sessionRefreshed?: boolean;
  proxyUsed?: string;
  userAgent?: string;
  /**
   * Copied (and redacted) by log(): the caller may change the objects
   * afterwards. Values: strings, numbers, booleans, null, Dates, arrays and
   * plain objects (or Maps) of them; anything else is sent as its text.
   */
  requestPayload?: Record<string, unknown>;
  responseSummary?: Record<string, unknown>;
  /** When the operation happened; default now. */
  createTime?: Date;
}

/** An entry the server refused; resending it cannot help. */
export interface Rejected {
  id: string;
  operationType: OperationType;
  field: string;
  reason: string;
}

/** The client's counters since it was created. */
export interface Stats {
  /** Accepted by log(). */
  enqueued: number;
  /** Confirmed stored by the server (new or duplicate). */
  acknowledged: number;
  /** Acknowledged rows the server already had (a retry of a lost answer). */
  duplicates: number;
  /** Refused by the server as invalid (reported to onRejected, never retried). */
  rejected: number;
  /** Pushed out of a full buffer, or logged after close(). */
  dropped: number;
  /** Given up after non-retryable errors, or at close(). */
  failed: number;
  /** Resend attempts. */
  retries: number;
  /** Waiting in the buffer or in flight. */
  inBuffer: number;
}

/** One acknowledged flush. */
export interface FlushResult {
  rows: number;
  accepted: number;
  duplicates: number;
  rejected: number;
  attempts: number;
  /** From the first attempt to the acknowledgement. */
  latencyMs: number;
  /** From the log() of the flush's oldest entry to the acknowledgement. */
  deliveryMs: number;
}

/** What close() could and could not deliver. */
export interface CloseResult {
  /** Everything accepted by log() was acknowledged, rejected or counted as dropped before close(). */
  ok: boolean;
  /** Entries lost: given up on (all of them since the client was created). */
  failed: number;
  /** Entries dropped from the full buffer (all of them since the client was created). */
  dropped: number;
  /** True when the timeout passed before the buffer was delivered. */
  timedOut: boolean;
  stats: Stats;
}

export interface OpLogClientOptions {
  /** Where OpLogService is: connection options, or a transport of your own (then close() leaves it open). */
  connect?: ConnectOptions;
  transport?: Transport;
  /** Entries held in memory (default 10,000). */
  bufferSize?: number;
  /** Entries per flush, and how many buffered entries start one before the linger ends (default 500, at most 1,000). */
  flushSize?: number;
  /** How long an entry may wait for its batch to fill (default 200 ms). */
  lingerMs?: number;
  /** Flushes in flight at once (default 2). */
  flushers?: number;
  /** First and longest wait between retries (default 100 ms and 10 s); waits double, with jitter. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** One Ingest attempt's deadline (default 30 s). */
  attemptTimeoutMs?: number;
  /** Replaces the default sensitive words. */
  redactKeys?: string[];
  /** Called for every entry the server refuses. */
  onRejected?: (r: Rejected) => void;
  /** Called after every acknowledged flush. */
  onFlush?: (f: FlushResult) => void;
}

// Limits of the server (services/oplog/internal/wire), a little under for
// payloads: the server measures the JSON a payload becomes.
const maxRowsPerMessage = 1000;
const maxPayloadDepth = 16 - 1;
const maxPayloadBytes = (16 << 10) - (1 << 10);
const maxExecutionTimeMs = 24 * 60 * 60 * 1000;
const maxRetryCount = 10000;
/** Errors that may be permanent (INTERNAL, UNKNOWN) are retried this many times. */
const maxInternalAttempts = 5;

const payloadKey = freeText(256);
const payloadString = freeText(maxPayloadBytes);

// LogRecord is a buffered entry: a copy of the caller's, with its text
// sanitised and its payloads redacted, stamped by log(). One object per
// entry: the buffer holds 10,000 of them, and the garbage collector pays
// for every extra one.
interface LogRecord extends Omit<Entry, "requestPayload" | "responseSummary" | "createTime"> {
  id: string;
  atMs: number;
  atNanos: number;
  queued: number; // performance.now() when log() took it: the linger counts from here
  traceId: string;
  spanId: string;
  request: JsonObject | undefined;
  response: JsonObject | undefined;
}

// The active span, when @opentelemetry/api is installed. Loaded with
// require so log() stays synchronous; the API keeps its state on
// globalThis, so this copy and the application's share the active context
// whichever module system each was loaded by.
type OtelAPI = { trace: { getActiveSpan(): { spanContext(): { traceId: string; spanId: string; traceFlags: number } } | undefined }; isSpanContextValid(sc: unknown): boolean };
let otel: OtelAPI | null | undefined;
function activeSpan(): { traceId: string; spanId: string } | undefined {
  if (otel === undefined) {
    try {
      otel = createRequire(import.meta.url)("@opentelemetry/api") as OtelAPI;
    } catch {
      otel = null;
    }
  }
  if (otel === null) return undefined;
  const sc = otel.trace.getActiveSpan()?.spanContext();
  return sc && otel.isSpanContextValid(sc) ? { traceId: sc.traceId, spanId: sc.spanId } : undefined;
}

/** The OpLog client. Create one per process and close() it at shutdown. */
export class OpLogClient {
  private readonly rpc: Client<typeof OpLogService>;
  private readonly conn: Connection | undefined;
  private readonly keys: Keys;
  private readonly o: Required<Omit<OpLogClientOptions, "connect" | "transport" | "redactKeys" | "onRejected" | "onFlush">> &
    Pick<OpLogClientOptions, "onRejected" | "onFlush">;

  private readonly ring: (LogRecord | undefined)[];
  private head = 0;
  private n = 0;
  private closed = false;
  private stopping = false;
  private readonly abort = new AbortController();
  private inFlight = 0;
  private lastMs = 0;
  private seq = 0;
  private readonly rand = Buffer.alloc(4096);
  private randAt = 4096;

  private wake: () => void = () => {};
  private sleeping = 0; // flushers waiting for a kick or their timer
  private woken: Promise<void>;
  private readonly running: Promise<void>[] = [];

  private enqueued = 0;
  private acknowledged = 0;
  private duplicates = 0;
  private rejected = 0;
  private dropped = 0;
  private failed = 0;
  private retries = 0;

  constructor(opts: OpLogClientOptions) {
    this.o = {
      bufferSize: opts.bufferSize ?? 10000,
      flushSize: opts.flushSize ?? 500,
      lingerMs: opts.lingerMs ?? 200,
      flushers: opts.flushers ?? 2,
      initialBackoffMs: opts.initialBackoffMs ?? 100,
      maxBackoffMs: opts.maxBackoffMs ?? 10_000,
      attemptTimeoutMs: opts.attemptTimeoutMs ?? 30_000,
      onRejected: opts.onRejected,
      onFlush: opts.onFlush,
    };
    const o = this.o;
    if (!(o.bufferSize >= 1)) throw new Error("oplog-client: bufferSize must be positive");
    if (!(o.flushSize >= 1 && o.flushSize <= maxRowsPerMessage)) throw new Error(`oplog-client: flushSize must be between 1 and ${maxRowsPerMessage}`);
    if (!(o.flushers >= 1 && o.lingerMs > 0 && o.initialBackoffMs > 0 && o.maxBackoffMs >= o.initialBackoffMs)) {
      throw new Error("oplog-client: flushers, lingerMs and backoff must be positive");
    }
    if ((opts.transport === undefined) === (opts.connect === undefined)) {
      throw new Error("oplog-client: give either connect or transport");
    }
    this.conn = opts.connect ? connect(opts.connect) : undefined;
    this.rpc = createClient(OpLogService, opts.transport ?? this.conn!.transport);
    this.keys = opts.redactKeys ? new Keys(opts.redactKeys) : defaultKeySet();
    this.ring = new Array(o.bufferSize);
    this.woken = new Promise((r) => (this.wake = r));
    for (let i = 0; i < o.flushers; i++) this.running.push(this.flusher());
  }

  /**
   * Buffers e. Never blocks, never throws, does no I/O: problems show up in
   * stats() and onRejected.
   */
  log(e: Entry): void {
    try {
      this.enqueue(e);
    } catch {
      // Only a bug of this client gets here (the entry is copied field by
      // field); it is counted, never thrown at the worker.
      this.enqueued++;
      this.dropped++;
    }
  }

  private enqueue(e: Entry): void {
    let atMs = e.createTime !== undefined ? e.createTime.getTime() : Date.now();
    if (!Number.isFinite(atMs)) atMs = Date.now();
    const queued = performance.now();
    const span = activeSpan();
    const rec: LogRecord = {
      id: "",
      atMs,
      // A sub-millisecond part from performance.now's clock keeps the
      // entries of one millisecond in their order.
      atNanos: Math.floor((queued % 1) * 1e6),
      queued,
      traceId: span?.traceId ?? "",
      spanId: span?.spanId ?? "",
      userId: String(e.userId ?? ""),
      operationType: e.operationType,
      outcome: e.outcome,
      platformAccountId: sanitize(Identifier, str(e.platformAccountId)),
      resourceId: sanitize(Identifier, str(e.resourceId)),
      errorCode: e.errorCode,
      errorType: sanitize(CodeKind, str(e.errorType)),
      errorMessage: sanitize(Message, str(e.errorMessage)),
      executionTimeMs: e.executionTimeMs,
      retryCount: e.retryCount,
      authTypeDetected: e.authTypeDetected,
      sessionRefreshed: e.sessionRefreshed,
      proxyUsed: sanitize(Identifier, str(e.proxyUsed)),
      userAgent: sanitize(UserAgent, str(e.userAgent)),
      request: e.requestPayload != null ? this.payload(e.requestPayload) : undefined,
      response: e.responseSummary != null ? this.payload(e.responseSummary) : undefined,
    };
    if (this.closed) {
      this.enqueued++;
      this.dropped++;
      return;
    }
    if (this.n === this.ring.length) {
      // Full: the oldest entry makes room.
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.ring.length;
      this.n--;
      this.dropped++;
    }
    rec.id = this.newId(atMs);
    this.ring[(this.head + this.n) % this.ring.length] = rec;
    this.n++;
    this.enqueued++;
    // A flusher wakes for the first entry (its linger starts) and for a
    // full batch.
    if (this.n === 1 || this.n >= this.o.flushSize) this.kick();
  }

  /**
   * Runs fn, then logs e with the outcome, error type and message, error
   * code and duration filled in, and returns fn's result or throws its
   * error unchanged. Fields already set in e are kept.
   */
  async track<T>(e: Entry, fn: () => Promise<T> | T): Promise<T> {
    const start = new Date();
    const t0 = performance.now();
    const done = (err: unknown, failed: boolean): void => {
      const entry: Entry = { ...e, createTime: e.createTime ?? start, executionTimeMs: performance.now() - t0 };
      if (!failed) {
        entry.outcome = Outcome.SUCCESS;
      } else {
        entry.outcome = Outcome.FAILED;
        entry.errorType ||= errorType(err);
        entry.errorMessage ||= errorMessage(err);
        if (entry.errorCode === undefined) {
          const code = (err as { errorCode?: unknown } | null)?.errorCode;
          if (typeof code === "number") entry.errorCode = code;
        }
      }
      this.log(entry);
    };
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      done(err, true);
      throw err;
    }
    done(undefined, false);
    return result;
  }

  /** The counters. */
  stats(): Stats {
    return {
      enqueued: this.enqueued,
      acknowledged: this.acknowledged,
      duplicates: this.duplicates,
      rejected: this.rejected,
      dropped: this.dropped,
      failed: this.failed,
      retries: this.retries,
      inBuffer: this.n + this.inFlight,
    };
  }

  /**
   * Stops accepting entries and delivers the buffer, retrying until
   * timeoutMs has passed; then gives up on what is left (counted as
   * failed) and closes the connection it opened. Never throws: the result
   * says what could not be delivered.
   */
  async close(timeoutMs = 30_000): Promise<CloseResult> {
    if (this.closed) {
      return { ok: false, failed: this.failed, dropped: this.dropped, timedOut: false, stats: this.stats() };
    }
    this.closed = true;
    this.kick();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all(this.running).then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.stopping = true;
      this.abort.abort(); // attempts in flight fail, and count as failed
      this.kick();
      await Promise.all(this.running);
    }
    const left = this.take(this.n);
    this.failed += left.length;
    this.inFlight -= left.length;
    this.conn?.close();
    const stats = this.stats();
    return { ok: stats.failed === 0 && stats.dropped === 0, failed: stats.failed, dropped: stats.dropped, timedOut, stats };
  }

  // --- flushing -------------------------------------------------------------

  // kick wakes the flushers that wait, if any: a no-op while all are busy
  // (each looks for the next batch when its flush ends), so log() pays for
  // a promise only when a flusher sleeps.
  private kick(): void {
    if (this.sleeping === 0) return;
    this.sleeping = 0;
    const wake = this.wake;
    this.woken = new Promise((r) => (this.wake = r));
    wake();
  }

  private take(max: number): LogRecord[] {
    const k = Math.min(max, this.n);
    const out: LogRecord[] = new Array(k);
    for (let i = 0; i < k; i++) {
      const j = (this.head + i) % this.ring.length;
      out[i] = this.ring[j]!;
      this.ring[j] = undefined;
    }
    this.head = (this.head + k) % this.ring.length;
    this.n -= k;
    this.inFlight += k;
    return out;
  }

  // nextBatch takes a batch if one is due: a full one, one whose oldest
  // entry has waited the linger, or anything once close() was called.
  // Otherwise it says how long until one is due; -1 when none ever will be.
  private nextBatch(): [LogRecord[] | undefined, number] {
    if (this.stopping) return [undefined, -1];
    if (this.n === 0) return [undefined, this.closed ? -1 : this.o.lingerMs];
    const waited = performance.now() - this.ring[this.head]!.queued;
    if (this.n >= this.o.flushSize || this.closed || waited >= this.o.lingerMs) {
      return [this.take(this.o.flushSize), 0];
    }
    return [undefined, this.o.lingerMs - waited];
  }

  private async flusher(): Promise<void> {
    for (;;) {
      const [batch, wait] = this.nextBatch();
      if (batch) {
        try {
          await this.deliver(batch);
        } finally {
          this.inFlight -= batch.length;
        }
        continue;
      }
      if (wait < 0) return;
      let timer: NodeJS.Timeout | undefined;
      this.sleeping++;
      const kicked = await Promise.race([
        this.woken.then(() => true),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), wait);
          // An empty buffer does not keep the process alive (a script that
          // forgets close() still exits); entries waiting for their linger do,
          // until they are delivered.
          if (this.n === 0) timer.unref();
        }),
      ]);
      clearTimeout(timer);
      if (!kicked) this.sleeping = Math.max(0, this.sleeping - 1);
    }
  }

  // deliver sends a batch until it is acknowledged, the error is permanent,
  // or close() gives up.
  private async deliver(batch: LogRecord[]): Promise<void> {
    const req = create(IngestRequestSchema, { logs: batch.map(toProto) });
    const start = performance.now();
    let backoff = this.o.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      let err: ConnectError;
      try {
        const resp = await this.rpc.ingest(once(req), { timeoutMs: this.o.attemptTimeoutMs, signal: this.abort.signal });
        this.recordAck(batch, resp, attempt, start);
        return;
      } catch (e) {
        err = ConnectError.from(e);
      }
      // CANCELED that this client did not ask for is the connection
      // dying under the call (Node resets the streams of a session that
      // closes with the HTTP/2 code CANCEL, e.g. when the server is
      // killed): as transient as UNAVAILABLE. In Go only the caller's own
      // context gives CANCELED, so there it never means this.
      const code = err.code === Code.Canceled && !this.abort.signal.aborted ? Code.Unavailable : err.code;
      const permanent = !this.stopping && !transient(code) && (!maybeTransient(code) || attempt >= maxInternalAttempts);
      if (permanent || this.stopping) {
        this.failed += batch.length;
        return;
      }
      const wait = Math.max(jitter(backoff), retryDelayMs(err) ?? 0);
      if (await this.sleep(wait)) continue; // stopped: the next attempt fails at once and ends up above
      this.retries++;
      backoff = Math.min(2 * backoff, this.o.maxBackoffMs);
    }
  }

  // sleep waits ms; true when close() gave up meanwhile.
  private sleep(ms: number): Promise<boolean> {
    if (this.stopping) return Promise.resolve(true);
    return new Promise((resolve) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.abort.signal.removeEventListener("abort", onAbort);
        resolve(false);
      }, ms);
      this.abort.signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  private recordAck(batch: LogRecord[], resp: IngestResponse, attempts: number, start: number): void {
    const accepted = Number(resp.accepted);
    const duplicates = Number(resp.duplicates);
    this.acknowledged += accepted + duplicates;
    this.duplicates += duplicates;
    this.rejected += resp.rejected.length;
    if (this.o.onRejected) {
      for (const r of resp.rejected) {
        const i = Number(r.index);
        const rej: Rejected = {
          id: r.id,
          field: r.field,
          reason: r.reason,
          operationType: i >= 0 && i < batch.length ? batch[i]!.operationType : OperationType.UNSPECIFIED,
        };
        callback(() => this.o.onRejected!(rej));
      }
    }
    if (this.o.onFlush) {
      const now = performance.now();
      let oldest = batch[0]!.queued;
      for (const r of batch) oldest = Math.min(oldest, r.queued);
      const f: FlushResult = {
        rows: batch.length, accepted, duplicates, rejected: resp.rejected.length, attempts,
        latencyMs: now - start, deliveryMs: now - oldest,
      };
      callback(() => this.o.onFlush!(f));
    }
  }

  // --- ids and payloads ---------------------------------------------------

  private random(n: number): Buffer {
    if (this.randAt + n > this.rand.length) {
      randomFillSync(this.rand);
      this.randAt = 0;
    }
    const b = this.rand.subarray(this.randAt, this.randAt + n);
    this.randAt += n;
    return b;
  }

  // newId returns a UUIDv7: 48 bits of Unix milliseconds, a 12-bit
  // sequence that keeps one client's ids increasing within a millisecond,
  // and 62 random bits (the Go SDK's layout).
  private newId(atMs: number): string {
    let ms = Math.floor(atMs);
    if (ms <= this.lastMs) {
      this.seq++;
      if (this.seq > 0xfff) {
        this.lastMs++;
        this.seq = 0;
      }
      ms = this.lastMs;
    } else {
      const r = this.random(2);
      this.lastMs = ms;
      this.seq = ((r[0]! << 8) | r[1]!) & 0x3ff;
    }
    const r = this.random(8);
    const h = hex;
    const t = ms / 0x10000; // the top 32 bits of the 48 (ms < 2^48, exact in a double)
    return (
      h[(t / 0x1000000) & 0xff]! + h[(t / 0x10000) & 0xff]! + h[(t / 0x100) & 0xff]! + h[t & 0xff]! + "-" +
      h[(ms / 0x100) & 0xff]! + h[ms & 0xff]! + "-" +
      h[0x70 | ((this.seq >> 8) & 0x0f)]! + h[this.seq & 0xff]! + "-" +
      h[0x80 | (r[0]! & 0x3f)]! + h[r[1]!]! + "-" +
      h[r[2]!]! + h[r[3]!]! + h[r[4]!]! + h[r[5]!]! + h[r[6]!]! + h[r[7]!]!
    );
  }

  // payload copies m as a JSON object for google.protobuf.Struct: sensitive
  // keys' values replaced by the placeholder at every depth, secrets in
  // strings and keys redacted, strings made valid for the server,
  // non-finite numbers as strings, values deeper than the limit
  // "[too deep]"; a payload too large to store becomes
  // {truncated: true, approx_bytes: n}.
  private payload(m: Record<string, unknown>): JsonObject {
    this.approx = 0;
    const obj = this.struct(m, 1);
    // Measured exactly only when it may be too large: approx counts every
    // string's UTF-16 length three times over, an upper bound of its UTF-8.
    if (this.approx <= maxPayloadBytes) return obj;
    const size = Buffer.byteLength(JSON.stringify(obj));
    return size > maxPayloadBytes ? { truncated: true, approx_bytes: size } : obj;
  }

  private approx = 0; // payload()'s running upper bound of the size, in bytes

  private struct(m: Record<string, unknown> | Map<unknown, unknown>, depth: number): JsonObject {
    const out: JsonObject = {};
    const entries = m instanceof Map ? m.entries() : Object.entries(m);
    for (const [rawKey, v] of entries) {
      if (v === undefined) continue; // as JSON.stringify does
      const k = sanitize(payloadKey, String(rawKey));
      this.approx += 3 * k.length + 8;
      out[this.keys.redactString(k)] = this.keys.sensitive(k) ? PLACEHOLDER : this.value(v, depth);
    }
    return out;
  }

  private value(v: unknown, depth: number): JsonValue {
    switch (typeof v) {
      case "string":
        this.approx += 3 * v.length + 2;
        return this.keys.redactString(sanitize(payloadString, v));
      case "boolean":
        this.approx += 5;
        return v;
      case "number":
        this.approx += 24;
        return Number.isFinite(v) ? v : Number.isNaN(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";
      case "bigint":
        return Number(v);
      case "undefined":
        return null;
      case "object":
        break;
      default:
        return this.text(String(v));
    }
    if (v === null) return null;
    if (v instanceof Date) return Number.isFinite(v.getTime()) ? rfc3339(v) : "Invalid Date";
    if (v instanceof Error) return this.text(v.message);
    if (Array.isArray(v) || v instanceof Map || isPlainObject(v)) {
      if (depth >= maxPayloadDepth) return "[too deep]";
      if (Array.isArray(v)) return v.map((item) => this.value(item, depth + 1));
      return this.struct(v as Record<string, unknown>, depth + 1);
    }
    if (v instanceof Set) return this.value([...v], depth);
    const toJSON = (v as { toJSON?: () => unknown }).toJSON;
    if (typeof toJSON === "function") return this.value(toJSON.call(v), depth);
    return this.text(String(v));
  }

  private text(s: string): string {
    this.approx += 3 * s.length + 2;
    return this.keys.redactString(sanitize(payloadString, s));
  }
}

const hex = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

function toProto(r: LogRecord): OperationLog {
  const e = r;
  const log = create(OperationLogSchema, {
    id: r.id,
    userId: e.userId,
    platformAccountId: e.platformAccountId,
    operationType: e.operationType ?? OperationType.UNSPECIFIED,
    resourceId: e.resourceId,
    outcome: e.outcome ?? Outcome.UNSPECIFIED,
    errorType: e.errorType,
    errorMessage: e.errorMessage,
    retryCount: Math.min(Math.max(Math.trunc(e.retryCount ?? 0), 0), maxRetryCount) || 0,
    authTypeDetected: e.authTypeDetected ?? 0,
    sessionRefreshed: e.sessionRefreshed === true,
    proxyUsed: e.proxyUsed,
    userAgent: e.userAgent,
    traceId: r.traceId,
    spanId: r.spanId,
    createTime: { ...timestampFromMs(r.atMs), nanos: (((r.atMs % 1000) + 1000) % 1000) * 1e6 + r.atNanos },
  });
  if (e.errorCode !== undefined && Number.isFinite(e.errorCode)) log.errorCode = Math.trunc(e.errorCode) | 0;
  if (e.executionTimeMs !== undefined && e.executionTimeMs > 0) {
    log.executionTimeMs = BigInt(Math.min(Math.floor(e.executionTimeMs), maxExecutionTimeMs)); // sub-millisecond is 0
  }
  if (r.request) log.requestPayload = r.request;
  if (r.response) log.responseSummary = r.response;
  return log;
}

async function* once<T>(m: T): AsyncIterable<T> {
  yield m;
}

function transient(c: Code): boolean {
  return c === Code.Unavailable || c === Code.ResourceExhausted || c === Code.Aborted || c === Code.DeadlineExceeded;
}

function maybeTransient(c: Code): boolean {
  return c === Code.Internal || c === Code.Unknown;
}

/** A random wait in [d/2, d]: spreads the retries of many workers. */
export function jitter(d: number): number {
  return d / 2 + Math.random() * (d / 2);
}

function callback(f: () => void): void {
  try {
    f();
  } catch {
    // The worker's callback failed: its problem, not the delivery's.
  }
}

function str(v: unknown): string {
  return v == null ? "" : String(v);
}

function isPlainObject(v: object): boolean {
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

// rfc3339 is Go's time.RFC3339Nano of a UTC time: trailing zeros of the
// fraction dropped.
function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.?0+Z$/, "Z");
}

/** An operation failure with the error type (and code) the log should record. */
export class OpLogError extends Error {
  constructor(
    readonly errorType: string,
    message: string,
    readonly errorCode?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "OpLogError";
  }
}

/**
 * The error type track() logs: an errorType string property names itself
 * (OpLogError has one); a timeout (TimeoutError, as Playwright and
 * AbortSignal.timeout throw) is "TIMEOUT", an abort "CANCELED"; anything
 * else "UNKNOWN".
 */
export function errorType(err: unknown): string {
  if (err == null) return "";
  const t = (err as { errorType?: unknown }).errorType;
  if (typeof t === "string" && t !== "") return t;
  const name = (err as { name?: unknown }).name;
  if (name === "TimeoutError") return "TIMEOUT";
  if (name === "AbortError") return "CANCELED";
  return "UNKNOWN";
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
