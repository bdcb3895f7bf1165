// `npm pack` makes an installable package: the tarball installs into an
// empty project (its dependencies from npm's cache, filled by `npm ci`)
// and its entry points import, the generated messages included.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

test("npm pack gives a tarball that installs and imports", () => {
  const dir = mkdtempSync(join(tmpdir(), "platforma-ts-pack-"));
  try {
    execFileSync("npm", ["pack", "--silent", "--pack-destination", dir], { cwd: pkgDir, stdio: ["ignore", "pipe", "inherit"] });
    const tgz = readdirSync(dir).find((f) => f.endsWith(".tgz"));
    assert.ok(tgz, "a tarball");
    const app = join(dir, "app");
    execFileSync("mkdir", ["-p", app]);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", "--silent", join(dir, tgz)], { cwd: app, stdio: ["ignore", "pipe", "inherit"] });
    writeFileSync(join(app, "check.mjs"), `
      import { OpLogClient, createProfileClient, connect, OperationType, defaultKeySet } from "@platforma/oplog-client";
      import { ProfileService } from "@platforma/oplog-client/gen/platforma/profile/v1/profile_service_pb";
      const c = new OpLogClient({ connect: { address: "127.0.0.1:1" }, lingerMs: 10 });
      c.log({ userId: "u", operationType: OperationType.GET_REVIEWS });
      const r = await c.close(200);
      console.log(JSON.stringify({ typed: typeof createProfileClient, service: ProfileService.typeName, redacted: defaultKeySet().redactString("password=x"), failed: r.failed }));
    `);
    const out = JSON.parse(execFileSync("node", ["check.mjs"], { cwd: app, encoding: "utf8" }));
    assert.deepEqual(out, { typed: "function", service: "platforma.profile.v1.ProfileService", redacted: "password=[REDACTED]", failed: 1 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
