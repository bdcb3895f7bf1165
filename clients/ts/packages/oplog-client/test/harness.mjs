// The stack for the tests: the built binaries (make build, and
// bin/devstack) on a throwaway Postgres, through `devstack -json` (see
// services/kit/cmd/devstack/jsonmode.go): one JSON line says where
// everything is; "kill oplog" / "start oplog" on its stdin crash and
// restart a service; closing stdin stops everything.

import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../../..");
const binDir = process.env.PLATFORMA_BIN ?? join(repoRoot, "bin");

export async function startStack() {
  const devstack = join(binDir, "devstack");
  for (const b of ["devstack", "profile", "reviewmeta", "oplog"]) {
    if (!existsSync(join(binDir, b))) throw new Error(`${join(binDir, b)} is missing: run make build and go build -o bin/devstack ./services/kit/cmd/devstack (make ts-test does)`);
  }
  const dataDir = mkdtempSync(join(tmpdir(), "platforma-ts-"));
  chmodSync(dataDir, 0o755); // reachable by the postgres user when root
  const proc = spawn(devstack, ["-json", "-bin", binDir, "-data", dataDir], { stdio: ["pipe", "pipe", "pipe"] });
  const logs = [];
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => {
    logs.push(d);
    if (logs.length > 400) logs.splice(0, 200);
    if (process.env.STACK_LOGS) process.stderr.write(d);
  });
  const exited = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
  const lines = createInterface({ input: proc.stdout });
  const queue = [];
  const waiters = [];
  lines.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
  const nextLine = (timeoutMs) =>
    new Promise((res, rej) => {
      if (queue.length) return res(queue.shift());
      const t = setTimeout(() => rej(new Error(`devstack: no answer in ${timeoutMs} ms; its output:\n${logs.join("").slice(-4000)}`)), timeoutMs);
      waiters.push((l) => {
        clearTimeout(t);
        res(l);
      });
      exited.then(({ code }) => rej(new Error(`devstack exited (${code}); its output:\n${logs.join("").slice(-4000)}`)));
    });
  const desc = JSON.parse(await nextLine(120_000));
  let commands = Promise.resolve();
  return {
    desc,
    /** Sends "kill <service>" or "start <service>" and waits for the answer. */
    command(cmd) {
      const p = commands.then(async () => {
        proc.stdin.write(cmd + "\n");
        const res = JSON.parse(await nextLine(90_000));
        if (!res.ok) throw new Error(`devstack ${cmd}: ${res.error}`);
        return res;
      });
      commands = p.catch(() => {});
      return p;
    },
    logs: () => logs.join(""),
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill("SIGKILL"), 60_000);
      await exited;
      clearTimeout(t);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
