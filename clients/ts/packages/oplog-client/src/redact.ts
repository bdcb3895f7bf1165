// Redaction of payloads: a port of services/oplog/redact (Go), rule for
// rule, checked against the same test vectors
// (services/oplog/redact/testdata/vectors.json). The server applies the
// Go rules again to what arrives, so the two must agree: what this SDK
// leaves in, the server would take out, and the row would differ from
// what the worker thought it sent.
//
// The value scanner works on UTF-8 bytes, as the Go one does, so that
// every length and offset rule (a 40-character AWS secret, a 256-byte
// name) counts the same units.

/** Replaces the value of every sensitive key and every secret found in a string. */
export const PLACEHOLDER = "[REDACTED]";

const defaultWords = [
  "password", "passwords", "passwd", "pwd", "pw", "pass", "passphrase", "passcode",
  "secret", "secrets", "token", "tokens", "jwt", "bearer",
  "apikey", "apikeys", "accesskey", "secretkey", "privatekey", "privkey", "signingkey",
  "encryptionkey", "masterkey", "clientkey", "authkey",
  "credential", "credentials", "creds", "auth", "authorization",
  "cookie", "cookies", "session", "sessionid", "sessid", "sessionkey",
  "otp", "totp", "hotp", "onetimecode", "onetimepassword", "verificationcode", "mfacode",
  "smscode", "authcode", "securitycode", "pin", "pincode", "cvv", "cvc",
  "dsn", "connectionstring",
];

/** The sensitive words used when none are configured (a new array each time). */
export function defaultKeys(): string[] {
  return defaultWords.slice();
}

// ---------------------------------------------------------------------------
// Normalize: the form keys are compared in (see redact/normalize.go).

// asciiFold maps an ASCII letter to lower case and a digit to itself;
// everything else to 0: dropped.
const asciiFold = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) asciiFold[c] = c;
for (let c = 0x61; c <= 0x7a; c++) {
  asciiFold[c] = c;
  asciiFold[c - 0x20] = c;
}

// Letters of other scripts drawn like Latin ones, after case folding.
const lookalike = new Map<number, string>(
  Object.entries({
    // Cyrillic
    "а": "a", "в": "b", "е": "e", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "һ": "h", "ԁ": "d", "ԛ": "q",
    "ԝ": "w", "ӏ": "l", "ү": "y",
    // Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ο": "o", "ρ": "p", "τ": "t", "χ": "x",
    "ζ": "z", "ϲ": "c", "ϳ": "j",
    // Latin letters without a decomposition, and Armenian
    "ɡ": "g", "ȷ": "j", "օ": "o",
  }).map(([k, v]) => [k.codePointAt(0)!, v]),
);

// Go's unicode.Other_Default_Ignorable_Code_Point (JavaScript's regular
// expressions know only Default_Ignorable_Code_Point, a larger set).
const otherDefaultIgnorable: Array<[number, number]> = [
  [0x034f, 0x034f], [0x115f, 0x1160], [0x17b4, 0x17b5], [0x2065, 0x2065], [0x3164, 0x3164],
  [0xffa0, 0xffa0], [0xfff0, 0xfff8], [0xe0000, 0xe0000], [0xe0002, 0xe001f], [0xe0080, 0xe00ff],
  [0xe01f0, 0xe0fff],
];
function isOtherDefaultIgnorable(r: number): boolean {
  for (const [lo, hi] of otherDefaultIgnorable) if (r >= lo && r <= hi) return true;
  return false;
}

const letterOrDigit = /^[\p{L}\p{Nd}]$/u;
const digitRe = /^\p{Nd}$/u;
const nameRuneRe = /^[\p{L}\p{N}\p{M}\p{Cf}\p{Zs}]$/u;

// decomposition is a character's NFKD, or undefined when it has none.
// Hangul syllables are decomposed algorithmically by Go's norm package,
// whose Properties.Decomposition reports none for them: so here too.
function decomposition(r: number): string | undefined {
  if (r >= 0xac00 && r <= 0xd7a3) return undefined;
  const c = String.fromCodePoint(r);
  const d = c.normalize("NFKD");
  return d === c ? undefined : d;
}

// simpleUpper and simpleLower are Go's unicode.ToUpper and ToLower: one
// character to one character. JavaScript's full mappings may give more
// (ß to SS); then the simple mapping is the character itself, except for
// İ, whose simple lower case is i.
function simpleUpper(r: number): number {
  const u = String.fromCodePoint(r).toUpperCase();
  const first = u.codePointAt(0)!;
  return u.length === String.fromCodePoint(first).length ? first : r;
}
function simpleLower(r: number): number {
  const l = String.fromCodePoint(r).toLowerCase();
  const first = l.codePointAt(0)!;
  if (l.length === String.fromCodePoint(first).length) return first;
  return r === 0x130 ? first : r;
}

function appendFolded(out: string[], r: number, again: boolean): void {
  if (r < 0x80) {
    const f = asciiFold[r]!;
    if (f !== 0) out.push(String.fromCharCode(f));
    return;
  }
  const f = simpleLower(simpleUpper(r));
  if (f !== r && f >= 0x80 && again) {
    const d = decomposition(f);
    if (d !== undefined) {
      for (const ch of d) appendFolded(out, ch.codePointAt(0)!, false);
      return;
    }
  }
  const l = lookalike.get(f);
  if (l !== undefined) {
    out.push(l);
  } else if (f === 0xdf || f === 0x1e9e) {
    out.push("ss");
  } else if (f < 0x80) {
    const a = asciiFold[f]!;
    if (a !== 0) out.push(String.fromCharCode(a));
  } else {
    const ch = String.fromCodePoint(f);
    if (letterOrDigit.test(ch) && !isOtherDefaultIgnorable(f)) out.push(ch);
  }
}

const normalASCII = /^[a-z0-9]*$/;

/**
 * The form in which keys are compared with the sensitive words: NFKD,
 * case folding, look-alike letters of other scripts to Latin ones, and
 * only letters and digits kept ("API_KEY" and "ａｐｉＫｅｙ" are "apikey").
 */
export function normalize(key: string): string {
  if (normalASCII.test(key)) return key;
  const out: string[] = [];
  for (const ch of key) {
    const r = ch.codePointAt(0)!;
    if (r < 0x80) {
      const f = asciiFold[r]!;
      if (f !== 0) out.push(String.fromCharCode(f));
      continue;
    }
    if (r >= 0xd800 && r <= 0xdfff) continue; // a lone surrogate: not UTF-8, dropped as Go drops invalid bytes
    const d = decomposition(r);
    if (d === undefined) {
      appendFolded(out, r, true);
      continue;
    }
    for (const c of d) appendFolded(out, c.codePointAt(0)!, true);
  }
  return out.join("");
}

// stripDigits drops the digits at the end of a normalised key.
function stripDigits(n: string): string {
  const last = n.charCodeAt(n.length - 1);
  if (n.length === 0 || (last < 0x80 && !(last >= 0x30 && last <= 0x39))) return n; // the common case: no digit at the end
  const chars = [...n];
  let end = chars.length;
  while (end > 0 && digitRe.test(chars[end - 1]!)) end--;
  return end === chars.length ? n : chars.slice(0, end).join("");
}

/** A set of sensitive words and the value rules. */
export class Keys {
  private readonly words: string[];

  constructor(words: readonly string[]) {
    const seen = new Set<string>();
    for (const w of words) {
      const n = stripDigits(normalize(w));
      if (n !== "") seen.add(n);
    }
    this.words = [...seen];
  }

  // Answers for recent keys: payloads repeat the same few keys, and the
  // normal form costs more than a lookup. Bounded: cleared when full.
  private readonly seen = new Map<string, boolean>();

  /** Whether key names a secret: its normal form, without trailing digits, ends with a word. */
  sensitive(key: string): boolean {
    if (key.length > 64) return this.sensitiveUncached(key);
    let v = this.seen.get(key);
    if (v === undefined) {
      if (this.seen.size >= 4096) this.seen.clear();
      v = this.sensitiveUncached(key);
      this.seen.set(key, v);
    }
    return v;
  }

  private sensitiveUncached(key: string): boolean {
    if (this.words.length === 0) return false;
    const n = stripDigits(normalize(key));
    if (n === "") return false;
    for (const w of this.words) if (n.endsWith(w)) return true;
    return false;
  }

  /** s with every secret found in it replaced by PLACEHOLDER; s itself when there is none. */
  redactString(s: string): string {
    if (!mayHoldSecret(s)) return s;
    // Encoded into a scratch buffer: no allocation unless something is
    // redacted (the scan reads the bytes; the output is built only then).
    let b: Uint8Array;
    if (s.length * 3 <= scratch.length) {
      const { written } = encoder.encodeInto(s, scratch);
      b = scratch.subarray(0, written);
    } else {
      b = Buffer.from(s, "utf8");
    }
    const out = redactBytes(this, b);
    return out === b ? s : Buffer.from(out.buffer, out.byteOffset, out.byteLength).toString("utf8");
  }
}

const encoder = new TextEncoder();
const scratch = new Uint8Array(64 << 10);

let defaults: Keys | undefined;
/** Keys of the default words. */
export function defaultKeySet(): Keys {
  return (defaults ??= new Keys(defaultWords));
}

// mayHoldSecret is a cheap test: a string without any byte that can start
// a rule (a separator, a dash, or a letter patterns start with) holds no
// secret.
const triggers = /[:=%\uff1a\uff1d\-BbeAgxsrn]/;
function mayHoldSecret(s: string): boolean {
  return s.length >= 3 && triggers.test(s);
}

// ---------------------------------------------------------------------------
// The value rules (see redact/values.go).

const clsName = 1 << 0;
const clsWord = 1 << 1;
const clsB64 = 1 << 2;
const clsJWT = 1 << 3;
const clsDelim = 1 << 4;
const clsSep = 1 << 5;
const clsDash = 1 << 6;
const clsStart = 1 << 7;
const clsSpace = 1 << 8;

const cls = new Uint16Array(256);
for (let c = 0; c < 256; c++) {
  const alnum = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39);
  if (alnum || c === 0x5f || c === 0x2e || c === 0x2d || c >= 0x80) cls[c]! |= clsName;
  if (alnum || c === 0x5f) cls[c]! |= clsWord;
  if (alnum || c === 0x2b || c === 0x2f) cls[c]! |= clsB64;
  if (alnum || c === 0x5f || c === 0x2d || c === 0x2e) cls[c]! |= clsJWT;
}
for (const c of " \t\r\n\v\f&;,\"'<>\\)]}") cls[c.charCodeAt(0)]! |= clsDelim;
for (const c of [0x3a, 0x3d, 0x25, 0xef]) cls[c]! |= clsSep;
for (const c of "BbeAgxsrn") cls[c.charCodeAt(0)]! |= clsStart;
cls[0x2d]! |= clsDash;
cls[0x20]! |= clsSpace;
cls[0x09]! |= clsSpace;

const is = (c: number, k: number): boolean => (cls[c]! & k) !== 0;

const placeholderBytes = Buffer.from(PLACEHOLDER);
const FW_COLON = Buffer.from("："); // ef bc 9a
const FW_EQUALS = Buffer.from("＝"); // ef bc 9d

function hasPrefix(s: Uint8Array, i: number, p: string | Uint8Array): boolean {
  const n = p.length;
  if (i < 0 || s.length - i < n) return false;
  if (typeof p === "string") {
    for (let j = 0; j < n; j++) if (s[i + j] !== p.charCodeAt(j)) return false;
  } else {
    for (let j = 0; j < n; j++) if (s[i + j] !== p[j]) return false;
  }
  return true;
}

function hasPrefixFold(s: Uint8Array, i: number, p: string): boolean {
  if (s.length - i < p.length) return false;
  for (let j = 0; j < p.length; j++) if ((s[i + j]! | 0x20) !== p.charCodeAt(j)) return false;
  return true;
}

function indexOf(s: Uint8Array, from: number, to: number, sub: string): number {
  for (let i = from; i + sub.length <= to; i++) {
    if (s[i] === sub.charCodeAt(0) && hasPrefix(s, i, sub)) return i - from;
  }
  return -1;
}

function equalBytes(s: Uint8Array, a: number, b: number, t: Uint8Array): boolean {
  if (b - a !== t.length) return false;
  for (let i = 0; i < t.length; i++) if (s[a + i] !== t[i]) return false;
  return true;
}

interface State {
  aws: boolean;
}

function redactBytes(k: Keys, s: Uint8Array): Uint8Array {
  const st: State = { aws: false };
  const parts: Uint8Array[] = [];
  let last = 0;
  let changed = false;
  for (let from = 0; ; ) {
    const [a, b] = next(k, s, from, st);
    if (a < 0) break;
    from = b;
    if (equalBytes(s, a, b, placeholderBytes)) continue; // redacted already
    changed = true;
    parts.push(s.subarray(last, a), placeholderBytes);
    last = b;
  }
  if (!changed) return s;
  parts.push(s.subarray(last));
  return Buffer.concat(parts);
}

function next(k: Keys, s: Uint8Array, from: number, st: State): [number, number] {
  let prevWord = false;
  let prevB64 = false;
  for (let i = from; i < s.length; i++) {
    const c = s[i]!;
    const cl = cls[c]!;
    if (!st.aws && ((cl & (clsSep | clsDash | clsStart)) === 0 || (prevWord && (cl & (clsSep | clsDash)) === 0))) {
      prevWord = (cl & clsWord) !== 0;
      continue;
    }
    if ((cl & clsSep) !== 0) {
      const [a, b] = separated(k, s, i);
      if (a >= 0) return [a, b];
    } else if ((cl & clsDash) !== 0) {
      const e = pemEnd(s, i);
      if (e >= 0) return [i, e];
    } else if ((cl & clsStart) !== 0 && !prevWord) {
      const [a, b] = wordPattern(s, i, st);
      if (a >= 0) return [a, b];
    }
    if (st.aws && !prevB64 && (cl & clsB64) !== 0) {
      let e = i;
      while (e < s.length && is(s[e]!, clsB64)) e++;
      if (e - i === 40) return [i, e];
    }
    prevWord = (cl & clsWord) !== 0;
    prevB64 = (cl & clsB64) !== 0;
  }
  return [-1, -1];
}

const maxName = 256;
const textDecoder = new TextDecoder();

function separated(k: Keys, s: Uint8Array, i: number): [number, number] {
  let width = 1;
  let eol = false;
  switch (s[i]) {
    case 0x3a: // :
      if (hasPrefix(s, i + 1, "//")) return userinfo(s, i + 3);
      if (hasPrefix(s, i + 1, ":") || (i > 0 && s[i - 1] === 0x3a)) return [-1, -1];
      if (hasPrefix(s, i + 1, "=")) width = 2;
      eol = true;
      break;
    case 0x3d: // =
      if (hasPrefix(s, i + 1, "=") || (i > 0 && (s[i - 1] === 0x3d || s[i - 1] === 0x21 || s[i - 1] === 0x3c || s[i - 1] === 0x3e))) {
        return [-1, -1];
      }
      if (hasPrefix(s, i + 1, ">")) width = 2;
      break;
    case 0x25: // %
      if (!hasPrefix(s, i + 1, "3") || i + 2 >= s.length || ((s[i + 2]! | 0x20) !== 0x64 && (s[i + 2]! | 0x20) !== 0x61)) return [-1, -1];
      width = 3;
      break;
    case 0xef:
      if (hasPrefix(s, i, FW_COLON)) eol = true;
      else if (!hasPrefix(s, i, FW_EQUALS)) return [-1, -1];
      width = 3;
      break;
  }
  const [ns, ne, quoted] = name(s, i);
  if (ns === ne || !k.sensitive(textDecoder.decode(s.subarray(ns, ne)))) return [-1, -1];
  let within = 0;
  if (eol && ns > 0 && (s[ns - 1] === 0x22 || s[ns - 1] === 0x27)) within = s[ns - 1]!;
  const [vs, ve] = value(s, i + width, eol && !quoted, within);
  if (vs === ve) return [-1, -1];
  return [vs, ve];
}

// decodeLastRune is Go's utf8.DecodeLastRune over s[0:end].
function decodeLastRune(s: Uint8Array, end: number): [number, number] {
  if (end === 0) return [0xfffd, 0];
  const c = s[end - 1]!;
  if (c < 0x80) return [c, 1];
  const lim = Math.max(end - 4, 0);
  let start = end - 1;
  for (start--; start >= lim; start--) {
    if ((s[start]! & 0xc0) !== 0x80) break;
  }
  if (start < 0) start = 0;
  const [r, size] = decodeRune(s, start, end);
  if (start + size !== end) return [0xfffd, 1];
  return [r, size];
}

// decodeRune is Go's utf8.DecodeRune over s[i:end]: (RuneError, 1) for
// an invalid or incomplete encoding.
export function decodeRune(s: Uint8Array, i: number, end: number = s.length): [number, number] {
  const c0 = s[i]!;
  if (c0 < 0x80) return [c0, 1];
  const n = end - i;
  const cont = (j: number, lo = 0x80, hi = 0xbf): boolean => j < end && s[j]! >= lo && s[j]! <= hi;
  if (c0 >= 0xc2 && c0 <= 0xdf) {
    if (n >= 2 && cont(i + 1)) return [((c0 & 0x1f) << 6) | (s[i + 1]! & 0x3f), 2];
  } else if (c0 >= 0xe0 && c0 <= 0xef) {
    const lo = c0 === 0xe0 ? 0xa0 : 0x80;
    const hi = c0 === 0xed ? 0x9f : 0xbf;
    if (n >= 3 && cont(i + 1, lo, hi) && cont(i + 2)) {
      return [((c0 & 0x0f) << 12) | ((s[i + 1]! & 0x3f) << 6) | (s[i + 2]! & 0x3f), 3];
    }
  } else if (c0 >= 0xf0 && c0 <= 0xf4) {
    const lo = c0 === 0xf0 ? 0x90 : 0x80;
    const hi = c0 === 0xf4 ? 0x8f : 0xbf;
    if (n >= 4 && cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3)) {
      return [((c0 & 0x07) << 18) | ((s[i + 1]! & 0x3f) << 12) | ((s[i + 2]! & 0x3f) << 6) | (s[i + 3]! & 0x3f), 4];
    }
  }
  return [0xfffd, 1];
}

function name(s: Uint8Array, i: number): [number, number, boolean] {
  let j = i;
  let quoted = false;
  while (j > 0 && is(s[j - 1]!, clsSpace)) j--;
  if (j > 0 && (s[j - 1] === 0x22 || s[j - 1] === 0x27)) {
    quoted = true;
    j--;
    if (j > 0 && s[j - 1] === 0x5c) j--;
  }
  if (j > 0 && s[j - 1] === 0x5d) {
    j--;
  } else if (j >= 3 && s[j - 3] === 0x25 && s[j - 2] === 0x35 && (s[j - 1]! | 0x20) === 0x64) {
    j -= 3;
  }
  const end = j;
  while (j > 0 && end - j < maxName) {
    const c = s[j - 1]!;
    if (c >= 0x80) {
      const [r, size] = decodeLastRune(s, j);
      if (!nameRuneRe.test(String.fromCodePoint(r)) || (r === 0xfffd && size === 1)) return [j, end, quoted];
      j -= size;
    } else if (is(c, clsName) || (c === 0x20 && j < end && j >= 2 && is(s[j - 2]!, clsName))) {
      j--;
    } else {
      return [j, end, quoted];
    }
  }
  return [j, end, quoted];
}

function value(s: Uint8Array, i: number, eol: boolean, within: number): [number, number] {
  while (i < s.length && is(s[i]!, clsSpace)) i++;
  if (i === s.length) return [i, i];
  const q = quoteLen(s, i);
  if (q > 0) {
    const quote = s[i + q - 1];
    const vs = i + q;
    for (let j = vs; j < s.length; j++) {
      if (s[j] !== quote) continue;
      if (q === 1 && j > vs && s[j - 1] === 0x5c) continue; // an escaped quote
      if (q === 2 && s[j - 1] !== 0x5c) continue;
      if (q === 2) return [vs, j - 1];
      return [vs, j];
    }
    return [vs, s.length];
  }
  const pe = pemEnd(s, i);
  if (pe >= 0) return [i, pe];
  if (eol) {
    let e = i;
    while (e < s.length && s[e] !== 0x0a && s[e] !== 0x0d && (within === 0 || s[e] !== within || s[e - 1] === 0x5c)) e++;
    while (e > i && is(s[e - 1]!, clsSpace)) e--;
    return [i, e];
  }
  let e = tokenEnd(s, i);
  if (scheme(s, i, e)) {
    let j = e;
    while (j < s.length && is(s[j]!, clsSpace)) j++;
    if (j > e) {
      const f = tokenEnd(s, j);
      if (f > j) e = f;
    }
  }
  return [i, e];
}

function quoteLen(s: Uint8Array, i: number): number {
  if (s[i] === 0x22 || s[i] === 0x27) return 1;
  if (s[i] === 0x5c && i + 1 < s.length && (s[i + 1] === 0x22 || s[i + 1] === 0x27)) return 2;
  return 0;
}

function tokenEnd(s: Uint8Array, i: number): number {
  while (i < s.length) {
    const c = s[i]!;
    if (c === 0x5b && hasPrefix(s, i, placeholderBytes)) i += placeholderBytes.length;
    else if (is(c, clsDelim)) return i;
    else i++;
  }
  return i;
}

const schemes = ["bearer", "basic", "digest", "token", "negotiate", "ntlm", "apikey"];
function scheme(s: Uint8Array, a: number, b: number): boolean {
  for (const w of schemes) if (b - a === w.length && hasPrefixFold(s, a, w)) return true;
  return false;
}

function userinfo(s: Uint8Array, i: number): [number, number] {
  let e = i;
  while (e < s.length && e - i < 512) {
    const c = s[e];
    if (c === 0x2f || c === 0x3f || c === 0x23 || c === 0x22 || c === 0x27 || c === 0x3c || c === 0x3e || c === 0x5c ||
      c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) break;
    e++;
  }
  let at = -1;
  let colon = -1;
  for (let j = i; j < e; j++) {
    if (s[j] === 0x40) at = j;
    else if (s[j] === 0x3a && colon < 0) colon = j;
  }
  if (at < 0 || colon < 0 || colon > at || colon + 1 === at) return [-1, -1];
  return [colon + 1, at];
}

const pemBegin = "-----BEGIN ";
const pemEndOf = "-----END ";
const pemDash = "-----";

function pemEnd(s: Uint8Array, i: number): number {
  if (!hasPrefix(s, i, pemBegin)) return -1;
  const ls = i + pemBegin.length;
  let le = ls;
  while (le < s.length && le - ls < 64 && s[le] !== 0x2d && s[le] !== 0x0a && s[le] !== 0x0d) le++;
  if (!hasPrefix(s, le, pemDash) || indexOf(s, ls, le, "PRIVATE KEY") < 0) return -1;
  const label = s.subarray(ls, le);
  for (let j = le + pemDash.length; ; ) {
    const k = indexOf(s, j, s.length, pemEndOf);
    if (k < 0) return s.length;
    j += k + pemEndOf.length;
    if (s.length - j >= label.length && equalBytes(s, j, j + label.length, label) && hasPrefix(s, j + label.length, pemDash)) {
      return j + label.length + pemDash.length;
    }
  }
}

const isUpperOrDigit = (c: number): boolean => (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39);
const alnum = (c: number): boolean => (c >= 0x61 && c <= 0x7a) || isUpperOrDigit(c);
const alnumUnderscore = (c: number): boolean => alnum(c) || c === 0x5f;
const alnumDash = (c: number): boolean => alnum(c) || c === 0x2d;
const base64URL = (c: number): boolean => alnum(c) || c === 0x2d || c === 0x5f;

interface TokenPrefix {
  prefix: string;
  min: number;
  chars: (c: number) => boolean;
}
const tokenPrefixes: TokenPrefix[] = [
  { prefix: "ghp_", min: 30, chars: alnum }, { prefix: "gho_", min: 30, chars: alnum },
  { prefix: "ghu_", min: 30, chars: alnum }, { prefix: "ghs_", min: 30, chars: alnum },
  { prefix: "ghr_", min: 30, chars: alnum },
  { prefix: "github_pat_", min: 22, chars: alnumUnderscore },
  { prefix: "glpat-", min: 20, chars: base64URL },
  { prefix: "xoxb-", min: 10, chars: alnumDash }, { prefix: "xoxp-", min: 10, chars: alnumDash },
  { prefix: "xoxa-", min: 10, chars: alnumDash }, { prefix: "xoxr-", min: 10, chars: alnumDash },
  { prefix: "xoxs-", min: 10, chars: alnumDash }, { prefix: "xoxe-", min: 10, chars: alnumDash },
  { prefix: "sk_live_", min: 16, chars: alnum }, { prefix: "rk_live_", min: 16, chars: alnum },
  { prefix: "sk_test_", min: 16, chars: alnum }, { prefix: "rk_test_", min: 16, chars: alnum },
  { prefix: "sk-proj-", min: 20, chars: base64URL },
  { prefix: "AIza", min: 35, chars: base64URL },
  { prefix: "npm_", min: 30, chars: alnum },
];
const prefixesBy: TokenPrefix[][] = Array.from({ length: 256 }, () => []);
for (const p of tokenPrefixes) prefixesBy[p.prefix.charCodeAt(0)]!.push(p);

function wordPattern(s: Uint8Array, i: number, st: State): [number, number] {
  switch (s[i]) {
    case 0x42: // B
    case 0x62: // b
      for (const w of ["bearer", "basic"]) {
        if (!hasPrefixFold(s, i, w)) continue;
        let j = i + w.length;
        if (j === s.length || !is(s[j]!, clsSpace)) continue;
        while (j < s.length && is(s[j]!, clsSpace)) j++;
        const e = tokenEnd(s, j);
        if (credential(s, j, e)) return [j, e];
      }
      break;
    case 0x65: {
      // e
      if (!hasPrefix(s, i, "eyJ")) return [-1, -1];
      let e = i;
      let dots = 0;
      let first = 0;
      let second = 0;
      for (; e < s.length && is(s[e]!, clsJWT); e++) {
        if (s[e] === 0x2e) {
          dots++;
          if (dots === 1) first = e;
          else if (dots === 2) second = e;
        }
      }
      if (dots >= 2 && first - i >= 10 && second - first > 2) return [i, e];
      break;
    }
    case 0x41: // A
      if (s.length - i >= 20 && (hasPrefix(s, i, "AKIA") || hasPrefix(s, i, "ASIA") || hasPrefix(s, i, "ABIA") || hasPrefix(s, i, "ACCA"))) {
        let ok = i + 20 === s.length || !is(s[i + 20]!, clsWord);
        for (let j = i + 4; ok && j < i + 20; j++) ok = isUpperOrDigit(s[j]!);
        if (ok) {
          st.aws = true;
          return [i, i + 20];
        }
      }
      break;
  }
  for (const p of prefixesBy[s[i]!]!) {
    if (s.length - i < p.prefix.length + p.min || s[i + 1] !== p.prefix.charCodeAt(1) || !hasPrefix(s, i, p.prefix)) continue;
    let e = i + p.prefix.length;
    while (e < s.length && p.chars(s[e]!)) e++;
    if (e - i - p.prefix.length >= p.min) return [i, e];
  }
  return [-1, -1];
}

function credential(s: Uint8Array, a: number, b: number): boolean {
  const k = indexOf(s, a, b, PLACEHOLDER);
  if (k === 0) return true;
  if (k > 0) b = a + k;
  if (b - a < 8) return false;
  for (let i = a; i < b; i++) {
    const c = s[i]!;
    if (!((c >= 0x61 && c <= 0x7a) || (i === a && c >= 0x41 && c <= 0x5a))) return true;
  }
  return false;
}
