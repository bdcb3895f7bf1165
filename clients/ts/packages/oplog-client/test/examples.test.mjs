// The examples run as written, against the real stack.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { OperationType, Outcome } from "../dist/index.js";
import { OpLogProvider } from "../examples/nest-provider.mjs";
import { startStack } from "./harness.mjs";

let stack;
before(async () => (stack = await startStack()));
after(async () => stack?.stop());

test("examples/plain.mjs logs, tracks, records a login and delivers everything", async () => {
  const d = stack.desc;
  const { stdout } = await promisify(execFile)(process.execPath, ["examples/plain.mjs"], {
    env: { ...process.env, OPLOG_ADDR: d.services.oplog.addr, PROFILE_ADDR: d.services.profile.addr, CA: d.ca, CERT: d.worker_cert, KEY: d.worker_key },
  });
  assert.match(stdout, /profile [0-9a-f-]{36}: score 100/);
  assert.match(stdout, /all delivered/);
  assert.match(stdout, /acknowledged: 3/);
});

test("the NestJS-style provider flushes in onModuleDestroy", async () => {
  const d = stack.desc;
  process.env.OPLOG_ADDR = d.services.oplog.addr;
  process.env.PLATFORMA_CA = d.ca;
  process.env.PLATFORMA_WORKER_CERT = d.worker_cert;
  process.env.PLATFORMA_WORKER_KEY = d.worker_key;
  const provider = new OpLogProvider({ lingerMs: 60_000 }); // nothing leaves before shutdown
  const userId = randomUUID();
  for (let i = 0; i < 25; i++) provider.log({ userId, operationType: OperationType.GET_STORES, outcome: Outcome.SUCCESS });
  assert.equal(provider.stats().acknowledged, 0);
  await provider.onModuleDestroy();
  assert.equal(provider.stats().acknowledged, 25);
});
