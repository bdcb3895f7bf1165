// The shared test vectors: the same files the Go suites read
// (services/oplog/redact/testdata/vectors.json for redaction,
// services/kit/validate/testdata/text_kinds.json for sanitising), so Go
// and TypeScript give the same answers or one of the suites fails.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createRouterTransport } from "@connectrpc/connect";
import {
  Code, Identifier, Message, OpLogClient, PLACEHOLDER, UserAgent, defaultKeySet, normalize, problemBytes, sanitize, sanitizeBytes,
} from "../dist/index.js";
import { repoRoot } from "./harness.mjs";

const redactVectors = JSON.parse(readFileSync(join(repoRoot, "services/oplog/redact/testdata/vectors.json"), "utf8"));
const textVectors = JSON.parse(readFileSync(join(repoRoot, "services/kit/validate/testdata/text_kinds.json"), "utf8"));

test("redaction vectors: keys, values (stable), normal forms", () => {
  assert.equal(redactVectors.placeholder, PLACEHOLDER);
  const keys = defaultKeySet();
  assert.ok(redactVectors.keys.length > 50 && redactVectors.values.length > 40);
  for (const c of redactVectors.keys) assert.equal(keys.sensitive(c.key), c.sensitive, `key ${JSON.stringify(c.key)} (${c.note ?? ""})`);
  for (const c of redactVectors.values) {
    const got = keys.redactString(c.input);
    assert.equal(got, c.output, `value ${JSON.stringify(c.input)}`);
    assert.equal(keys.redactString(got), got, `redacting ${JSON.stringify(got)} again changes it`);
  }
  for (const c of redactVectors.normalize) assert.equal(normalize(c.key), c.normalized, `normalize ${JSON.stringify(c.key)}`);
});

// What log() sends: the same vectors through the client's payload copy,
// as values, in lists, as errors and as keys.
test("redaction vectors through log()'s payload copy", () => {
  const client = new OpLogClient({ transport: createRouterTransport(() => {}) });
  const payload = (m) => client["payload"](m);
  const canary = "hunter2-canary";
  for (const c of redactVectors.keys) {
    assert.deepEqual(payload({ [c.key]: canary }), { [c.key]: c.sensitive ? PLACEHOLDER : canary }, `key ${JSON.stringify(c.key)}`);
  }
  for (const c of redactVectors.values) {
    const got = payload({ v: c.input, list: [c.input], err: new Error(c.input), nested: { deeper: c.input } });
    assert.deepEqual(got, { v: c.output, list: [c.output], err: c.output, nested: { deeper: c.output } }, `value ${JSON.stringify(c.input)}`);
  }
  const got = payload({ "Bearer cAnArY-4f1d9b2e77": 1, note: "Authorization: Bearer cAnArY-4f1d9b2e77", nan: NaN, inf: -Infinity, when: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 100)) });
  assert.deepEqual(got, { "Bearer [REDACTED]": 1, note: "Authorization: [REDACTED]", nan: "NaN", inf: "-Inf", when: "2026-01-02T03:04:05.1Z" });
  let deep = {};
  const root = deep;
  for (let i = 0; i < 30; i++) deep = deep.d = {};
  assert.match(JSON.stringify(payload(root)), /\[too deep\]/);
  assert.deepEqual(Object.keys(payload({ big: "x".repeat(20000) })).sort(), ["approx_bytes", "truncated"]);
  void client.close(0);
});

test("text kind vectors: problems and sanitised values", () => {
  const kinds = { identifier: Identifier, code: Code, message: Message, user_agent: UserAgent };
  assert.equal(Object.keys(textVectors.kinds).length, Object.keys(kinds).length);
  for (const [name, max] of Object.entries(textVectors.kinds)) assert.equal(kinds[name].maxBytes, max, name);
  assert.ok(textVectors.cases.length > 10);
  for (const c of textVectors.cases) {
    const k = kinds[c.kind];
    const b = c.input_hex ? Buffer.from(c.input_hex, "hex") : Buffer.from(c.input, "utf8");
    const p = problemBytes(k, b);
    if (c.problem === "") assert.equal(p, "", `${c.kind} ${JSON.stringify(c.input)}`);
    else assert.ok(p.includes(c.problem), `${c.kind} ${JSON.stringify(c.input)}: ${p}`);
    assert.equal(sanitizeBytes(k, b), c.sanitized, `${c.kind} ${JSON.stringify(c.input ?? c.input_hex)}`);
    if (!c.input_hex) assert.equal(sanitize(k, c.input), c.sanitized, `${c.kind} ${JSON.stringify(c.input)} as a string`);
  }
  // A JavaScript string's lone surrogate is invalid UTF-8 for the server.
  assert.equal(sanitize(Identifier, "a\ud800b"), "a\ufffdb");
});
