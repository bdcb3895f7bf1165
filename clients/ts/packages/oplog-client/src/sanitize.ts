// Text kinds: a port of services/kit/validate/text.go, checked against the
// same vectors (services/kit/validate/testdata/text_kinds.json). Every
// service refuses a string that breaks its kind's rule; the SDKs sanitise
// instead, so a worker's sloppy text is stored rather than refused.

import { decodeRune } from "./redact.js";

/** One kind of text field, with one rule (see validate.Kind in Go). */
export interface Kind {
  readonly name: string;
  readonly maxBytes: number;
  readonly exact: boolean;
}

export const Identifier: Kind = { name: "identifier", maxBytes: 255, exact: true };
export const Code: Kind = { name: "code", maxBytes: 64, exact: true };
export function freeText(maxBytes: number): Kind {
  return { name: "free text", maxBytes, exact: false };
}
export const Message: Kind = freeText(4096);
export const UserAgent: Kind = freeText(512);

// Go's unicode.IsSpace: White_Space (U+0085 and U+00A0 included; unlike
// JavaScript's \s, U+FEFF is not space).
function isSpace(r: number): boolean {
  return (r >= 0x09 && r <= 0x0d) || r === 0x20 || r === 0x85 || r === 0xa0 || r === 0x1680 ||
    (r >= 0x2000 && r <= 0x200a) || r === 0x2028 || r === 0x2029 || r === 0x202f || r === 0x205f || r === 0x3000;
}

// Go's unicode.IsControl: C0 and C1.
function isControl(r: number): boolean {
  return r < 0x20 || (r >= 0x7f && r <= 0x9f);
}

/** Why b (UTF-8) is not a valid value of the kind, or "" when it is. */
export function problemBytes(k: Kind, b: Uint8Array): string {
  if (b.length > k.maxBytes) return `at most ${k.maxBytes} bytes, got ${b.length}`;
  const runes: number[] = [];
  for (let i = 0; i < b.length; ) {
    const [r, size] = decodeRune(b, i);
    if (r === 0xfffd && size === 1) return "must be valid UTF-8";
    runes.push(r);
    i += size;
  }
  if (runes.includes(0)) return "must not contain NUL bytes";
  if (!k.exact || runes.length === 0) return "";
  if (runes.some(isControl)) return "must not contain control characters";
  if (isSpace(runes[0]!) || isSpace(runes[runes.length - 1]!)) return "must not start or end with whitespace";
  return "";
}

/** problemBytes for a string (lone surrogates count as invalid UTF-8). */
export function problem(k: Kind, s: string): string {
  return problemBytes(k, utf8(s));
}

// utf8 encodes s; a lone surrogate becomes the byte 0xFF (invalid), so
// that it is reported and replaced like Go's invalid bytes.
function utf8(s: string): Uint8Array {
  if (!/[\ud800-\udfff]/.test(s)) return Buffer.from(s, "utf8");
  const parts: Buffer[] = [];
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    parts.push(c >= 0xd800 && c <= 0xdfff ? Buffer.from([0xff]) : Buffer.from(ch, "utf8"));
  }
  return Buffer.concat(parts);
}

const plainASCII = /^[\x20-\x7e]*$/;

/**
 * The value of the kind closest to s: invalid UTF-8 and NUL (and, in
 * exact kinds, control characters) become U+FFFD, exact kinds lose
 * surrounding whitespace, and the result is cut to maxBytes on a
 * character boundary. Valid values come back unchanged.
 */
export function sanitize(k: Kind, s: string): string {
  if (s === "") return s;
  // The common case without encoding: printable ASCII, short enough, not
  // padded.
  if (s.length <= k.maxBytes && plainASCII.test(s) && (!k.exact || s.length === 0 || (s[0] !== " " && s[s.length - 1] !== " "))) {
    return s;
  }
  return sanitizeBytes(k, utf8(s));
}

/** sanitize for text in UTF-8 bytes, which may be invalid. */
export function sanitizeBytes(k: Kind, b: Uint8Array): string {
  if (problemBytes(k, b) === "") return Buffer.from(b).toString("utf8");
  // strings.ToValidUTF8(s, "\uFFFD"): each run of invalid bytes becomes one
  // U+FFFD; then NUL becomes U+FFFD; in exact kinds control characters too.
  let runes: number[] = [];
  let invalid = false;
  for (let i = 0; i < b.length; ) {
    const [r, size] = decodeRune(b, i);
    i += size;
    if (r === 0xfffd && size === 1) {
      if (!invalid) runes.push(0xfffd);
      invalid = true;
      continue;
    }
    invalid = false;
    runes.push(r === 0 || (k.exact && isControl(r)) ? 0xfffd : r);
  }
  if (k.exact) runes = trim(runes);
  // Cut to maxBytes on a rune boundary.
  let bytes = 0;
  let n = 0;
  for (; n < runes.length; n++) {
    const size = runeLen(runes[n]!);
    if (bytes + size > k.maxBytes) break;
    bytes += size;
  }
  runes = runes.slice(0, n);
  if (k.exact) {
    while (runes.length > 0 && isSpace(runes[runes.length - 1]!)) runes.pop();
  }
  return String.fromCodePoint(...runes);
}

function trim(runes: number[]): number[] {
  let a = 0;
  let e = runes.length;
  while (a < e && isSpace(runes[a]!)) a++;
  while (e > a && isSpace(runes[e - 1]!)) e--;
  return runes.slice(a, e);
}

function runeLen(r: number): number {
  return r < 0x80 ? 1 : r < 0x800 ? 2 : r < 0x10000 ? 3 : 4;
}
