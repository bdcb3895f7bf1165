// A plain Node worker: log every operation, track an async one, report
// profiles' login outcomes, and close at exit.
//
//   OPLOG_ADDR=localhost:50053 PROFILE_ADDR=localhost:50051 \
//   CA=.data/pki/ca.pem CERT=.data/pki/worker.pem KEY=.data/pki/worker-key.pem \
//   node examples/plain.mjs
//
// (make run prints the addresses; .data/pki holds its credentials.)

import { randomUUID } from "node:crypto";
import {
  OpLogClient, OpLogError, OperationType, Outcome, AuthType, connect, createProfileClient,
} from "@platforma/oplog-client";

const tls = { caFile: process.env.CA, certFile: process.env.CERT, keyFile: process.env.KEY };
const oplog = new OpLogClient({
  connect: { address: process.env.OPLOG_ADDR ?? "localhost:50053", ...tls },
  onRejected: (r) => console.error(`oplog refused ${r.id}: ${r.field}: ${r.reason}`),
});

const userId = randomUUID();
const platformAccountId = "shop-1";

// A scrape, timed and logged whatever happens; the error is rethrown.
const reviews = await oplog.track(
  { userId, platformAccountId, operationType: OperationType.GET_REVIEWS, resourceId: "shop-1/reviews?page=1",
    requestPayload: { url: "https://platform.example/reviews?page=1", cookie: "secret, never stored" } },
  async () => {
    // await page.goto(...) in a real worker
    return [{ id: "r1" }, { id: "r2" }];
  },
);

// A failure with the type the operators filter on.
await oplog
  .track({ userId, platformAccountId, operationType: OperationType.ADD_REPLY, resourceId: "r1" }, async () => {
    throw new OpLogError("SELECTOR_NOT_FOUND", "no reply box on the page");
  })
  .catch(() => {});

// Plain log(): synchronous, never throws, no I/O.
oplog.log({ userId, platformAccountId, operationType: OperationType.CHECK_LOGIN, outcome: Outcome.SUCCESS,
  authTypeDetected: AuthType.NORMAL, responseSummary: { reviews: reviews.length } });

// The login outcome for the profile; the event id makes retries harmless.
const profileConn = connect({ address: process.env.PROFILE_ADDR ?? "localhost:50051", ...tls });
const profiles = createProfileClient(profileConn.transport);
const { profile } = await profiles.recordLoginResult({
  eventId: randomUUID(), userId, platformAccountId, outcome: Outcome.SUCCESS, authType: AuthType.NORMAL,
  occurredAt: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
});
console.log(`profile ${profile?.id}: score ${profile?.sessionStabilityScore}`);
profileConn.close();

const result = await oplog.close(10_000);
console.log(result.ok ? "all delivered" : `not delivered: ${result.failed} failed, ${result.dropped} dropped`, result.stats);
