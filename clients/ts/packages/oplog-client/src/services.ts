// Typed clients of ProfileService and ReviewMetadataService with the
// defaults a worker wants: a deadline on every call, and retries (backoff
// with jitter, the server's RetryInfo honoured) only for calls that are
// idempotent by the services' contracts, so a retry never counts anything
// twice:
//
//   ProfileService: RecordLoginResult and BatchRecordLoginResults are
//     idempotent on event_id (a repeat answers duplicate = true); the reads.
//   ReviewMetadataService: UpsertReviewMetadata and the batch are
//     idempotent on review_id (an older fetched_at never overwrites);
//     RecordReplyAttempt only with attempt_id set (without it, a repeat
//     would count a second attempt); the reads.
//
// Streaming calls (WatchProfileChanges) are passed through as they are:
// the caller resumes them with their cursor.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { CallOptions, Client, Transport } from "@connectrpc/connect";
import { ProfileService } from "./gen/platforma/profile/v1/profile_service_pb.js";
import { ReviewMetadataService } from "./gen/platforma/reviewmeta/v1/review_metadata_service_pb.js";
import { jitter } from "./client.js";
import { retryDelayMs } from "./retry.js";

export interface CallPolicy {
  /** Deadline of one attempt (default 10 s). */
  timeoutMs?: number;
  /** Attempts of an idempotent call, the first included (default 4). */
  maxAttempts?: number;
  /** First and longest wait between attempts (default 100 ms and 2 s). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

type Unary = (req: any, opts?: CallOptions) => Promise<any>;

// Codes worth another attempt of an idempotent call.
function retryable(c: Code): boolean {
  return c === Code.Unavailable || c === Code.ResourceExhausted || c === Code.Aborted || c === Code.DeadlineExceeded;
}

function withPolicy<T extends object>(client: T, policy: CallPolicy, idempotent: (method: string, req: any) => boolean): T {
  const timeoutMs = policy.timeoutMs ?? 10_000;
  const maxAttempts = policy.maxAttempts ?? 4;
  const initial = policy.initialBackoffMs ?? 100;
  const max = policy.maxBackoffMs ?? 2_000;
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(client)) {
    if (typeof fn !== "function" || name.startsWith("watch")) {
      out[name] = fn;
      continue;
    }
    const call = fn as Unary;
    out[name] = async (req: any, opts?: CallOptions) => {
      const attempts = idempotent(name, req) ? maxAttempts : 1;
      let backoff = initial;
      for (let attempt = 1; ; attempt++) {
        try {
          return await call(req, { timeoutMs, ...opts });
        } catch (e) {
          const err = ConnectError.from(e);
          if (attempt >= attempts || !retryable(err.code) || opts?.signal?.aborted) throw err;
          const wait = Math.max(jitter(backoff), retryDelayMs(err) ?? 0);
          await new Promise((r) => setTimeout(r, wait));
          backoff = Math.min(2 * backoff, max);
        }
      }
    };
  }
  return out as T;
}

export type ProfileClient = Client<typeof ProfileService>;
export type ReviewMetadataClient = Client<typeof ReviewMetadataService>;

/** A ProfileService client: every call idempotent (event ids), so every unary call is retried. */
export function createProfileClient(transport: Transport, policy: CallPolicy = {}): ProfileClient {
  return withPolicy(createClient(ProfileService, transport), policy, () => true);
}

/** A ReviewMetadataService client: RecordReplyAttempt is retried only with an attemptId. */
export function createReviewMetadataClient(transport: Transport, policy: CallPolicy = {}): ReviewMetadataClient {
  return withPolicy(createClient(ReviewMetadataService, transport), policy, (method, req) =>
    method !== "recordReplyAttempt" || (typeof req?.attemptId === "string" && req.attemptId !== ""),
  );
}
