// make bench-ts: the TypeScript client's figures, with the Go SDK's beside
// them from the same run.
//
//   1. log()'s cost per call, without and with a payload (the entries of
//      the Go SDK's BenchmarkLog and BenchmarkLogWithPayload), and those
//      Go benchmarks run now;
//   2. end to end: one client (one connection, default settings) logging
//      as fast as the server acknowledges (while its buffer has room, so
//      nothing is dropped) for DURATION seconds, from Node and then from
//      the Go SDK (bench/gosdk), against the same OpLogService of one
//      `devstack -json` stack (the built binaries, a throwaway Postgres);
//   3. the RSS of a Node process holding a full buffer (10,000 entries
//      with payloads, the server unreachable).

import { execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setImmediate as yieldNow } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { createRouterTransport } from "@connectrpc/connect";
import { OpLogClient, OperationType, Outcome } from "../dist/index.js";
import { OpLogService } from "../dist/gen/platforma/oplog/v1/oplog_service_pb.js";
import { repoRoot, startStack } from "../test/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const duration = Number(process.env.DURATION ?? 10);

const plain = { userId: "0193a0c2-0000-7000-8000-0000000000aa", operationType: OperationType.GET_REVIEWS, outcome: Outcome.FAILED,
  errorType: "TIMEOUT", executionTimeMs: 350, proxyUsed: "proxy-eu-3" };
const withPayload = { userId: "0193a0c2-0000-7000-8000-0000000000aa", operationType: OperationType.ADD_REPLY, outcome: Outcome.SUCCESS,
  requestPayload: { reviewId: "r-1", text: "Thank you!", password: "x" }, responseSummary: { status: 200 } };

function logCost(entry, bufferSize) {
  // No I/O: an in-process transport that is never reached (the loop is
  // synchronous, so no flush runs during it). With 65,536 entries held, as
  // in Go's benchmark (it too wraps around and drops once full), most of
  // the cost is the garbage collector's: entries that survive in a large
  // buffer are promoted and collected later. A healthy client holds about
  // a flush's worth, hence the second figure.
  const c = new OpLogClient({ transport: createRouterTransport(() => {}), bufferSize, lingerMs: 3_600_000, flushSize: 1000 });
  const n = 300_000;
  for (let i = 0; i < 50_000; i++) c.log(entry); // warm up the JIT
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) c.log(entry);
  return Number(process.hrtime.bigint() - t0) / n;
}

// Each figure of 1 in a process of its own: what one measurement leaves
// for the garbage collector must not be charged to the next.
if (process.argv[2] === "--log-cost") {
  console.log(logCost(process.argv[4] === "payload" ? withPayload : plain, Number(process.argv[3])));
  process.exit(0);
}
const logCostIn = (size, kind) =>
  Number(execFileSync(process.execPath, [fileURLToPath(import.meta.url), "--log-cost", String(size), kind], { encoding: "utf8" }).trim());

console.log("1. log() per call");
for (const size of [1 << 16, 1000]) {
  console.log(`   node: ${logCostIn(size, "plain").toFixed(0)} ns without a payload, ${logCostIn(size, "payload").toFixed(0)} ns with one (buffer of ${size} entries, full)`);
}
const goBench = execFileSync("go", ["test", "-run", "^$", "-bench", "^BenchmarkLog(WithPayload)?$", "-benchtime", "2s", "-benchmem", "./services/oplog/oplogclient/"],
  { cwd: repoRoot, encoding: "utf8" });
for (const line of goBench.split("\n").filter((l) => l.startsWith("BenchmarkLog"))) console.log(`   go:   ${line.replace(/\s+/g, " ")}`);

// The Go side of 2, built in a workspace of go.work's modules and bench/gosdk.
const work = mkdtempSync(join(tmpdir(), "platforma-bench-ts-"));
const uses = ["gen", "migrations", "services/kit", "services/oplog", "services/profile", "services/reviewmeta"].map((m) => `\t${join(repoRoot, m)}\n`).join("");
writeFileSync(join(work, "go.work"), `go 1.26.0\n\nuse (\n${uses}\t${join(here, "gosdk")}\n)\n`);
copyFileSync(join(repoRoot, "go.work.sum"), join(work, "go.work.sum"));
const goDriver = join(work, "gosdk");
execFileSync("go", ["build", "-o", goDriver, "."], { cwd: join(here, "gosdk"), env: { ...process.env, GOWORK: join(work, "go.work") }, stdio: "inherit" });

console.log(`2. end to end, one client, ${duration} s each, same OpLogService (TLS, client certificate)`);
const stack = await startStack();
try {
  const d = stack.desc;
  const node = async () => {
    const c = new OpLogClient({ connect: { address: d.services.oplog.addr, caFile: d.ca, certFile: d.worker_cert, keyFile: d.worker_key } });
    const user = randomUUID();
    const t0 = performance.now();
    let n = 0;
    while (performance.now() - t0 < duration * 1000) {
      if (c.stats().inBuffer >= 10_000 - 500) {
        await new Promise((r) => setTimeout(r, 1)); // full: wait for a flush
        continue;
      }
      for (let i = 0; i < 100; i++) {
        c.log({ userId: user, operationType: OperationType.GET_REVIEWS, outcome: Outcome.SUCCESS, resourceId: `r-${n}`, proxyUsed: "proxy-eu-3",
          requestPayload: { url: "https://platform.example/reviews?page=2", page: n, cookie: "x" } });
        n++;
      }
      await yieldNow();
    }
    const res = await c.close(60_000);
    const s = (performance.now() - t0) / 1000;
    return { sdk: "node", logged: n, acknowledged: res.stats.acknowledged, dropped: res.stats.dropped, failed: res.stats.failed, seconds: s, events_per_s: res.stats.acknowledged / s };
  };
  const go = () => {
    const out = execFileSync(goDriver, ["-addr", d.services.oplog.addr, "-ca", d.ca, "-cert", d.worker_cert, "-key", d.worker_key,
      "-user", randomUUID(), "-duration", `${duration}s`], { encoding: "utf8" });
    return JSON.parse(out.trim().split("\n").pop());
  };
  for (const r of [await node(), go()]) {
    console.log(`   ${r.sdk.padEnd(4)}: ${Math.round(r.events_per_s)} events/s acknowledged (${r.acknowledged} of ${r.logged} in ${r.seconds.toFixed(1)} s, ${r.dropped} dropped, ${r.failed} failed)`);
  }
} finally {
  await stack.stop();
  rmSync(work, { recursive: true, force: true });
}

console.log("3. RSS of a Node process holding a full buffer (10,000 entries with payloads, server unreachable)");
const child = spawn(process.execPath, ["--expose-gc", "--input-type=module", "-e", `
  import { OpLogClient, OperationType, Outcome } from ${JSON.stringify(resolve(here, "../dist/index.js"))};
  const mb = () => { gc(); return process.memoryUsage().rss / 2 ** 20; };
  const before = mb();
  const c = new OpLogClient({ connect: { address: "127.0.0.1:1" }, initialBackoffMs: 10_000, maxBackoffMs: 10_000 });
  for (let i = 0; i < 12_000; i++) c.log({ userId: "0193a0c2-0000-7000-8000-0000000000aa", operationType: OperationType.GET_REVIEWS,
    outcome: Outcome.FAILED, errorType: "TIMEOUT", errorMessage: "waiting for selector #reviews: timeout 30000ms exceeded " + i,
    resourceId: "shop-1/reviews?page=" + i, proxyUsed: "proxy-eu-3", userAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
    requestPayload: { url: "https://platform.example/reviews?page=" + i, page: i, cookie: "x" }, responseSummary: { status: 504 } });
  await new Promise((r) => setTimeout(r, 500));
  const after = mb();
  const st = c.stats();
  console.log(JSON.stringify({ before, after, held: st.inBuffer, dropped: st.dropped }));
  await c.close(0);
`], { stdio: ["ignore", "pipe", "inherit"] });
let out = "";
child.stdout.on("data", (d) => (out += d));
await new Promise((r) => child.on("exit", r));
const m = JSON.parse(out.trim());
console.log(`   ${m.before.toFixed(1)} MiB idle (the client's modules loaded), ${m.after.toFixed(1)} MiB holding ${m.held} entries (${m.dropped} dropped): ` +
  `${(m.after - m.before).toFixed(1)} MiB, about ${Math.round(((m.after - m.before) * 2 ** 20) / m.held)} bytes per entry`);
