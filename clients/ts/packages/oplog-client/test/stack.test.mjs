// The client against the real servers: the built binaries on a throwaway
// Postgres (harness.mjs), TLS with the worker's client certificate, rows
// checked by listing them back as an operator. Tests run one after the
// other: two of them kill OpLogService.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { context, trace } from "@opentelemetry/api";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  OpLogClient, OpLogError, OperationType, Outcome, AuthType, connect, createProfileClient, createReviewMetadataClient,
} from "../dist/index.js";
import { OpLogService } from "../dist/gen/platforma/oplog/v1/oplog_service_pb.js";
import { ReviewType } from "../dist/gen/platforma/reviewmeta/v1/review_metadata_service_pb.js";
import { startStack } from "./harness.mjs";

let stack;
let operator; // an operator's connection to OpLogService, for listing rows back
let oplogAdmin;

before(async () => {
  stack = await startStack();
  operator = connect({ address: stack.desc.services.oplog.addr, caFile: stack.desc.ca, token: stack.desc.operator_token });
  oplogAdmin = createClient(OpLogService, operator.transport);
});

after(async () => {
  operator?.close();
  await stack?.stop();
});

const worker = (service) => ({ address: stack.desc.services[service].addr, caFile: stack.desc.ca, certFile: stack.desc.worker_cert, keyFile: stack.desc.worker_key });

function newClient(opts = {}) {
  return new OpLogClient({ connect: worker("oplog"), maxBackoffMs: 1000, ...opts });
}

function entry(userId, n, extra = {}) {
  return { userId, operationType: OperationType.GET_REVIEWS, outcome: Outcome.SUCCESS, resourceId: `r-${n}`, ...extra };
}

// rows lists every row of a user, as an operator, following the pages.
async function rows(userId) {
  const out = [];
  let pageToken = "";
  do {
    const resp = await oplogAdmin.listOperationLogs({ userId, pageSize: 1000, pageToken });
    out.push(...resp.operationLogs);
    pageToken = resp.nextPageToken;
  } while (pageToken);
  return out;
}

// assertStoredOnce checks that the rows of userId are exactly want, each
// resource id (r-<n>) once.
async function assertStoredOnce(userId, want) {
  const got = await rows(userId);
  const ids = new Set(got.map((r) => r.id));
  const keys = new Set(got.map((r) => r.resourceId));
  assert.equal(ids.size, got.length, "no id stored twice");
  assert.equal(keys.size, got.length, "no entry stored twice");
  assert.equal(got.length, want, "every acknowledged entry is stored");
  return got;
}

test("rows land once with their fields, redacted, with the active span's trace context", async () => {
  // A minimal context manager, as an OpenTelemetry SDK would register.
  let active = context.active();
  context.setGlobalContextManager({
    active: () => active,
    with(ctx, fn, thisArg, ...args) {
      const prev = active;
      active = ctx;
      try {
        return fn.call(thisArg, ...args);
      } finally {
        active = prev;
      }
    },
    bind: (_ctx, t) => t,
    enable() { return this; },
    disable() { return this; },
  });
  const spanContext = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 1 };
  const client = newClient();
  const user = randomUUID();
  context.with(trace.setSpanContext(context.active(), spanContext), () => {
    client.log(entry(user, 0, {
      platformAccountId: " shop-1 ", errorCode: 42, executionTimeMs: 1234.9, retryCount: 2, authTypeDetected: AuthType.TWO_FACTOR,
      sessionRefreshed: true, proxyUsed: "proxy-eu-3", userAgent: "Mozilla/5.0", outcome: Outcome.FAILED, errorType: "TIMEOUT",
      errorMessage: "took too long", requestPayload: { password: "hunter2", url: "https://user:pw@shop/x?token=abc&page=2" },
      responseSummary: { count: 3 }, createTime: new Date(Date.now() - 60_000),
    }));
  });
  context.disable();
  const res = await client.close(20_000);
  assert.ok(res.ok, JSON.stringify(res));
  const [row] = await assertStoredOnce(user, 1);
  assert.match(row.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "a UUIDv7");
  assert.equal(row.platformAccountId, "shop-1", "sanitised as the server's rule wants");
  assert.equal(row.errorCode, 42);
  assert.equal(row.executionTimeMs, 1234n);
  assert.equal(row.retryCount, 2);
  assert.equal(row.authTypeDetected, AuthType.TWO_FACTOR);
  assert.equal(row.sessionRefreshed, true);
  assert.equal(row.errorType, "TIMEOUT");
  assert.deepEqual(row.requestPayload, { password: "[REDACTED]", url: "https://user:[REDACTED]@shop/x?token=[REDACTED]&page=2" });
  assert.deepEqual(row.responseSummary, { count: 3 });
  assert.equal(row.traceId, spanContext.traceId);
  assert.equal(row.spanId, spanContext.spanId);
  const age = Date.now() - (Number(row.createTime.seconds) * 1000 + row.createTime.nanos / 1e6);
  assert.ok(age > 55_000 && age < 120_000, `create_time is the entry's (${age} ms ago)`);
});

test("a bad row is reported through onRejected and never retried; the others are stored", async () => {
  const rejected = [];
  const flushes = [];
  const client = newClient({ onRejected: (r) => rejected.push(r), onFlush: (f) => flushes.push(f), flushSize: 100, lingerMs: 50 });
  const user = randomUUID();
  for (let i = 0; i < 5; i++) client.log(entry(user, i));
  client.log({ userId: "not-a-uuid", operationType: OperationType.ADD_REPLY, outcome: Outcome.SUCCESS });
  for (let i = 5; i < 10; i++) client.log(entry(user, i));
  const res = await client.close(20_000);
  assert.ok(res.ok, JSON.stringify(res));
  assert.equal(rejected.length, 1);
  assert.equal(rejected[0].field, "user_id");
  assert.equal(rejected[0].operationType, OperationType.ADD_REPLY);
  assert.match(rejected[0].id, /^[0-9a-f-]{36}$/);
  const st = res.stats;
  assert.equal(st.rejected, 1);
  assert.equal(st.acknowledged, 10);
  assert.equal(st.retries, 0, "never retried");
  assert.deepEqual(flushes.map((f) => f.attempts), flushes.map(() => 1));
  assert.equal(flushes.reduce((n, f) => n + f.rejected, 0), 1);
  await assertStoredOnce(user, 10);
});

test("rows land exactly once with OpLogService killed (-9) and restarted mid-flush", async () => {
  const client = newClient({ flushSize: 200, lingerMs: 20 });
  const user = randomUUID();
  let n = 0;
  // A producer at about 2,000 entries/s, logging through the crash.
  let producing = true;
  const producer = (async () => {
    while (producing) {
      for (let i = 0; i < 40; i++) client.log(entry(user, n++, { requestPayload: { page: n, url: `https://shop.example/reviews?page=${n}`, note: "x".repeat(200) } }));
      await sleep(20);
    }
  })();
  await sleep(1500);
  // Kill while a flush is in flight: wait for one to start.
  const t0 = Date.now();
  while (client["inFlight"] === 0 && Date.now() - t0 < 5000) await sleep(0);
  assert.ok(client["inFlight"] > 0, "a flush in flight at the kill");
  await stack.command("kill oplog");
  const atKill = client.stats();
  await sleep(1500);
  await stack.command("start oplog");
  await sleep(1500);
  producing = false;
  await producer;
  const res = await client.close(60_000);
  const st = res.stats;
  assert.ok(res.ok, JSON.stringify(res));
  assert.ok(atKill.enqueued > 1000, `logging before the kill (${atKill.enqueued})`);
  assert.ok(st.retries > 0, "the crash forced retries");
  assert.equal(st.enqueued, n);
  assert.equal(st.acknowledged, n, "every entry acknowledged (duplicates included)");
  assert.equal(st.dropped + st.failed + st.rejected, 0);
  await assertStoredOnce(user, n);
  console.log(`kill -9 mid-flush: ${n} entries, ${st.retries} retries, ${st.duplicates} duplicates (answers lost in the crash), all stored once`);
});

test("the buffer is bounded while the server is down: drops are counted, the rest delivered once it is back", async () => {
  await stack.command("kill oplog");
  try {
    const client = newClient({ bufferSize: 100, flushSize: 50, lingerMs: 20, maxBackoffMs: 200 });
    const user = randomUUID();
    for (let i = 0; i < 1000; i++) client.log(entry(user, i));
    await sleep(300);
    const down = client.stats();
    assert.equal(down.enqueued, 1000);
    assert.ok(down.inBuffer <= 100 + 2 * 50, `at most the buffer and two flushes in flight (${down.inBuffer})`);
    assert.ok(down.dropped >= 1000 - 200, `the oldest were dropped (${down.dropped})`);
    assert.equal(down.acknowledged, 0);
    await stack.command("start oplog");
    const res = await client.close(30_000);
    const st = res.stats;
    assert.equal(st.failed, 0);
    assert.equal(st.acknowledged + st.dropped, 1000, "acknowledged + dropped = enqueued");
    assert.equal(res.ok, false, "drops are reported");
    await assertStoredOnce(user, st.acknowledged);
  } finally {
    await stack.command("start oplog").catch(() => {}); // already running when the test passed
  }
});

test("close() delivers what it can, and reports what it could not", async () => {
  const user = randomUUID();
  const client = newClient({ lingerMs: 10_000 }); // only close() flushes
  for (let i = 0; i < 1200; i++) client.log(entry(user, i));
  const res = await client.close(20_000);
  assert.ok(res.ok && !res.timedOut, JSON.stringify(res));
  assert.equal(res.stats.acknowledged, 1200);
  await assertStoredOnce(user, 1200);

  await stack.command("kill oplog");
  try {
    const down = newClient();
    for (let i = 0; i < 10; i++) down.log(entry(randomUUID(), i));
    const t0 = Date.now();
    const r = await down.close(1500);
    assert.ok(Date.now() - t0 < 5000, "close() keeps its timeout");
    assert.equal(r.timedOut, true);
    assert.equal(r.ok, false);
    assert.equal(r.failed, 10, "what it could not deliver");
    assert.equal(r.stats.inBuffer, 0);
    down.log(entry(user, 99));
    assert.equal(down.stats().dropped, 1, "log() after close() is dropped, counted, and does not throw");
  } finally {
    await stack.command("start oplog");
  }
});

test("track() logs outcome, error type and duration, and passes results and errors through", async () => {
  const client = newClient();
  const user = randomUUID();
  const value = await client.track(entry(user, 1), async () => {
    await sleep(30);
    return 7;
  });
  assert.equal(value, 7);
  const boom = new OpLogError("SELECTOR_NOT_FOUND", "no #reviews on the page", 404);
  await assert.rejects(client.track(entry(user, 2, { operationType: OperationType.ADD_REPLY }), async () => { throw boom; }), (e) => e === boom);
  const timeout = Object.assign(new Error("waiting for selector"), { name: "TimeoutError" });
  await assert.rejects(client.track(entry(user, 3), () => Promise.reject(timeout)));
  assert.ok((await client.close(20_000)).ok);
  const got = Object.fromEntries((await assertStoredOnce(user, 3)).map((r) => [r.resourceId, r]));
  assert.equal(got["r-1"].outcome, Outcome.SUCCESS);
  assert.ok(got["r-1"].executionTimeMs >= 25n, `duration ${got["r-1"].executionTimeMs}`);
  assert.equal(got["r-2"].outcome, Outcome.FAILED);
  assert.equal(got["r-2"].errorType, "SELECTOR_NOT_FOUND");
  assert.equal(got["r-2"].errorMessage, "no #reviews on the page");
  assert.equal(got["r-2"].errorCode, 404);
  assert.equal(got["r-3"].errorType, "TIMEOUT");
});

test("typed calls to ProfileService and ReviewMetadataService round-trip", async () => {
  const pconn = connect(worker("profile"));
  const rconn = connect(worker("reviewmeta"));
  try {
    const profiles = createProfileClient(pconn.transport);
    const user = randomUUID();
    const login = { eventId: randomUUID(), userId: user, platformAccountId: "shop-ts", outcome: Outcome.SUCCESS, authType: AuthType.NORMAL, occurredAt: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 } };
    const first = await profiles.recordLoginResult(login);
    assert.equal(first.duplicate, false);
    assert.equal(first.profile.totalLoginCount, 1n);
    const again = await profiles.recordLoginResult(login);
    assert.equal(again.duplicate, true, "the event id makes a retry harmless");
    const got = await profiles.getProfile({ userId: user, platformAccountId: "shop-ts" });
    assert.equal(got.profile.id, first.profile.id);
    assert.equal(got.profile.successLoginCount, 1n);
    await assert.rejects(profiles.getProfile({ userId: user, platformAccountId: "nobody" }), (e) => ConnectError.from(e).code === Code.NotFound);
    await assert.rejects(profiles.recordLoginResult({ ...login, eventId: "x" }), (e) => ConnectError.from(e).code === Code.InvalidArgument);

    const reviews = createReviewMetadataClient(rconn.transport);
    const reviewId = randomUUID();
    const now = { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 };
    const up = await reviews.upsertReviewMetadata({ reviewMetadata: { reviewId, shopId: randomUUID(), source: "RECEIPT", fetchedAt: now } });
    assert.equal(up.reviewMetadata.reviewId, reviewId);
    assert.equal(up.reviewMetadata.reviewType, ReviewType.RECEIPT);
    const attemptId = randomUUID();
    const reply = await reviews.recordReplyAttempt({ reviewId, success: true, attemptedAt: now, attemptId });
    assert.equal(reply.reviewMetadata.replyAttemptCount, 1);
    const dup = await reviews.recordReplyAttempt({ reviewId, success: true, attemptedAt: now, attemptId });
    assert.equal(dup.duplicate, true);
    const read = await reviews.getReviewMetadata({ reviewId });
    assert.equal(read.reviewMetadata.replyAttemptCount, 1);
    assert.equal(read.reviewMetadata.replySuccess, true);
  } finally {
    pconn.close();
    rconn.close();
  }
});
