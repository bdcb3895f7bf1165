package redact

import (
	"unicode"
	"unicode/utf8"
)

// RedactString returns s with every secret found in it replaced by
// Placeholder; s itself, without allocating, when there is none.
//
// The value rules: one pass over the string, left to right, with a table
// lookup per byte. OpenTelemetry's redaction processor blocks values by
// pattern in the same spirit; these are written as scanners rather than
// regular expressions, to stay cheap on every string of every payload:
//
//   - name=value, name: value, name := value, name => value, with "=" and
//     ":" also percent-encoded (%3D, %3A) or full-width: when name is
//     sensitive (Keys.Sensitive, so the same spellings are caught as in
//     keys), its value is redacted. The name may be quoted ("password":,
//     \"password\":), bracketed (user[password]=) and hold single spaces
//     ("one time code:"). The value is: a quoted string to its closing
//     quote; after an unquoted name and ":", the rest of the line (a header
//     line such as "Authorization: Bearer abc"), or of the quoted string
//     the name starts ("Authorization: Bearer abc", in a list of headers
//     held in a string); otherwise a token up to whitespace or one of
//     & ; , " ' < > \ ) ] }, with the credential that follows when the
//     token is an auth scheme ("Bearer abc"); a PEM block whole.
//   - scheme://user:password@host: the password.
//   - Bearer and Basic credentials ("Bearer <token>"): the credential when
//     it is at least 8 characters and not a plain word (so "basic
//     authentication" is prose, "Basic dXNlcjpwYXNz" a credential).
//   - JWTs: eyJ<header>.<payload>.<signature>, also JWE's five parts.
//   - PEM private keys: -----BEGIN ... PRIVATE KEY----- through the
//     matching END line (to the end of the string when there is none).
//     Certificates and public keys are kept.
//   - AWS access key ids (AKIA, ASIA, ABIA, ACCA and 16 upper-case letters
//     or digits) and, in a string holding one, every standalone
//     40-character base64 word: the secret key that goes with it.
//   - Provider tokens by their documented prefixes: GitHub (ghp_, gho_,
//     ghu_, ghs_, ghr_, github_pat_), GitLab (glpat-), Slack (xox?-),
//     Stripe (sk_live_, rk_live_, sk_test_, rk_test_), Google API keys
//     (AIza), npm (npm_), OpenAI (sk-proj-).
//
// A GCP service account key held in a string is caught twice: by its
// "private_key": name and by the PEM block.
func (k Keys) RedactString(s string) string {
	if k.m == nil {
		return s
	}
	if out, changed := redactText(k.m, s); changed {
		return string(out)
	}
	return s
}

// RedactBytes is RedactString for bytes: b itself when it holds no secret,
// a new slice otherwise.
func (k Keys) RedactBytes(b []byte) []byte {
	if k.m == nil {
		return b
	}
	if out, changed := redactText(k.m, b); changed {
		return out
	}
	return b
}

func redactText[T text](m *matcher, s T) ([]byte, bool) {
	var (
		st   state
		out  []byte
		last int
	)
	for from := 0; ; {
		a, b := next(m, s, from, &st)
		if a < 0 {
			break
		}
		from = b
		if string(s[a:b]) == Placeholder { // redacted already: nothing to change
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(s)+len(Placeholder))
		}
		out = append(out, s[last:a]...)
		out = append(out, Placeholder...)
		last = b
	}
	if out == nil {
		return nil, false
	}
	return append(out, s[last:]...), true
}

// state is what the scan remembers: whether an AWS access key id was
// seen, after which 40-character base64 words are secrets.
type state struct{ aws bool }

// Byte classes.
const (
	clsName  = 1 << iota // may be part of a name: letters, digits, _ . - and non-ASCII (see nameRune)
	clsWord              // letters, digits, _: a pattern starts only after none of these
	clsB64               // base64: letters, digits, + /
	clsJWT               // base64url and the dots between a JWT's parts
	clsDelim             // ends an unquoted value
	clsSep               // : = % and the first byte of full-width : =
	clsStart             // may start a pattern: B b e A g x s r n
	clsDash              // - (a PEM block)
	clsSpace             // space and tab
)

var class = func() (t [256]uint16) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		if alnum || b == '_' || b == '.' || b == '-' || b >= 0x80 {
			t[c] |= clsName
		}
		if alnum || b == '_' {
			t[c] |= clsWord
		}
		if alnum || b == '+' || b == '/' {
			t[c] |= clsB64
		}
		if alnum || b == '_' || b == '-' || b == '.' {
			t[c] |= clsJWT
		}
	}
	for _, c := range " \t\r\n\v\f&;,\"'<>\\)]}" {
		t[c] |= clsDelim
	}
	for _, c := range []byte(":=%\xef") {
		t[c] |= clsSep
	}
	for _, c := range "BbeAgxsrn" {
		t[c] |= clsStart
	}
	t['-'] |= clsDash
	t[' '] |= clsSpace
	t['\t'] |= clsSpace
	return t
}()

func is(c byte, cls uint16) bool { return class[c]&cls != 0 }

// next returns the first secret at or after from, or -1, -1. The byte
// before from is taken as a boundary (it ends a secret, which becomes the
// placeholder), so a second pass over the result finds the same.
func next[T text](m *matcher, s T, from int, st *state) (int, int) {
	prevWord, prevB64 := false, false
	for i := from; i < len(s); i++ {
		c := s[i]
		cls := class[c]
		if !st.aws && (cls&(clsSep|clsDash|clsStart) == 0 || prevWord && cls&(clsSep|clsDash) == 0) {
			prevWord = cls&clsWord != 0 // the common case: inside a word, or nothing starts here
			continue
		}
		switch {
		case cls&clsSep != 0:
			if a, b := separated(m, s, i); a >= 0 {
				return a, b
			}
		case cls&clsDash != 0:
			if e := pemEnd(s, i); e >= 0 {
				return i, e
			}
		case cls&clsStart != 0 && !prevWord:
			if a, b := wordPattern(s, i, st); a >= 0 {
				return a, b
			}
		}
		if st.aws && !prevB64 && cls&clsB64 != 0 {
			e := i
			for e < len(s) && is(s[e], clsB64) {
				e++
			}
			if e-i == 40 {
				return i, e
			}
		}
		prevWord, prevB64 = cls&clsWord != 0, cls&clsB64 != 0
	}
	return -1, -1
}

// maxName bounds how far back a name is read before a separator.
const maxName = 256

// separated applies the name=value rule at the separator at i.
func separated[T text](m *matcher, s T, i int) (int, int) {
	width, eol := 1, false
	switch s[i] {
	case ':':
		if hasPrefix(s, i+1, "//") {
			return userinfo(s, i+3)
		}
		if hasPrefix(s, i+1, ":") || i > 0 && s[i-1] == ':' {
			return -1, -1 // :: is not a separator
		}
		if hasPrefix(s, i+1, "=") {
			width = 2
		}
		eol = true
	case '=':
		if hasPrefix(s, i+1, "=") || i > 0 && (s[i-1] == '=' || s[i-1] == '!' || s[i-1] == '<' || s[i-1] == '>') {
			return -1, -1 // a comparison
		}
		if hasPrefix(s, i+1, ">") {
			width = 2
		}
	case '%':
		if !hasPrefix(s, i+1, "3") || i+2 >= len(s) || s[i+2]|0x20 != 'd' && s[i+2]|0x20 != 'a' {
			return -1, -1
		}
		width = 3
	case 0xef:
		switch {
		case hasPrefix(s, i, "："):
			eol = true
		case hasPrefix(s, i, "＝"):
		default:
			return -1, -1
		}
		width = 3
	}
	ns, ne, quoted := name(s, i)
	if ns == ne || !sensitive(m, s[ns:ne]) {
		return -1, -1
	}
	var within byte // the quote of a string the name starts, that ends a line too
	if eol && ns > 0 && (s[ns-1] == '"' || s[ns-1] == '\'') {
		within = s[ns-1]
	}
	vs, ve := value(s, i+width, eol && !quoted, within)
	if vs == ve {
		return -1, -1
	}
	return vs, ve
}

// name returns the name that ends before the separator at i, and whether
// it was quoted.
func name[T text](s T, i int) (start, end int, quoted bool) {
	j := i
	for j > 0 && is(s[j-1], clsSpace) {
		j--
	}
	if j > 0 && (s[j-1] == '"' || s[j-1] == '\'') {
		quoted = true
		j--
		if j > 0 && s[j-1] == '\\' {
			j--
		}
	}
	switch { // user[password]=, user%5Bpassword%5D=
	case j > 0 && s[j-1] == ']':
		j--
	case j >= 3 && s[j-3] == '%' && s[j-2] == '5' && s[j-1]|0x20 == 'd':
		j -= 3
	}
	end = j
	for j > 0 && end-j < maxName {
		c := s[j-1]
		switch {
		case c >= utf8.RuneSelf:
			r, size := lastRune(s[:j])
			if !nameRune(r) || r == utf8.RuneError && size == 1 {
				return j, end, quoted
			}
			j -= size
		case is(c, clsName) || c == ' ' && j < end && j >= 2 && is(s[j-2], clsName):
			j--
		default:
			return j, end, quoted
		}
	}
	return j, end, quoted
}

// nameRune reports whether a non-ASCII rune may be part of a name: a
// letter, digit or mark, an invisible format character or a space (which
// Normalize drops). Punctuation such as a full-width colon ends a name.
func nameRune(r rune) bool {
	return unicode.In(r, unicode.L, unicode.N, unicode.M, unicode.Cf, unicode.Zs)
}

func lastRune[T text](s T) (rune, int) {
	if b, ok := any(s).([]byte); ok {
		return utf8.DecodeLastRune(b)
	}
	return utf8.DecodeLastRuneInString(string(s))
}

// value returns the span of the value that starts at i (after a
// separator): see the rules above. A line also ends at an unescaped
// within, when that is not 0.
func value[T text](s T, i int, eol bool, within byte) (int, int) {
	for i < len(s) && is(s[i], clsSpace) {
		i++
	}
	if i == len(s) {
		return i, i
	}
	if q := quoteLen(s, i); q > 0 {
		quote, vs := s[i+q-1], i+q
		for j := vs; j < len(s); j++ {
			switch {
			case s[j] != quote:
			case q == 1 && j > vs && s[j-1] == '\\': // an escaped quote
			case q == 2 && s[j-1] != '\\':
			case q == 2:
				return vs, j - 1
			default:
				return vs, j
			}
		}
		return vs, len(s)
	}
	if e := pemEnd(s, i); e >= 0 {
		return i, e
	}
	if eol {
		e := i
		for e < len(s) && s[e] != '\n' && s[e] != '\r' && (within == 0 || s[e] != within || s[e-1] == '\\') {
			e++
		}
		for e > i && is(s[e-1], clsSpace) {
			e--
		}
		return i, e
	}
	e := tokenEnd(s, i)
	if scheme(s[i:e]) { // Authorization=Bearer abc
		j := e
		for j < len(s) && is(s[j], clsSpace) {
			j++
		}
		if j > e {
			if f := tokenEnd(s, j); f > j {
				e = f
			}
		}
	}
	return i, e
}

// quoteLen is the length of the quote that opens a value at i: 1 for " and
// ', 2 for \" and \' (JSON held in a JSON string), 0 for none.
func quoteLen[T text](s T, i int) int {
	switch {
	case s[i] == '"' || s[i] == '\'':
		return 1
	case s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\''):
		return 2
	}
	return 0
}

// tokenEnd returns the end of the unquoted value that starts at i. A
// placeholder in it is part of it (its closing bracket does not end it),
// so a value is read the same before and after redaction.
func tokenEnd[T text](s T, i int) int {
	for i < len(s) {
		switch c := s[i]; {
		case c == '[' && hasPrefix(s, i, Placeholder):
			i += len(Placeholder)
		case is(c, clsDelim):
			return i
		default:
			i++
		}
	}
	return i
}

// scheme reports whether t is an HTTP authentication scheme that is
// followed by the credential.
func scheme[T text](t T) bool {
	for _, w := range [...]string{"bearer", "basic", "digest", "token", "negotiate", "ntlm", "apikey"} {
		if len(t) == len(w) && hasPrefixFold(t, 0, w) {
			return true
		}
	}
	return false
}

// userinfo returns the password in the authority that starts at i (after
// "scheme://"): between the first ':' and the last '@'.
func userinfo[T text](s T, i int) (int, int) {
	e := i
	for e < len(s) && e-i < 512 {
		c := s[e]
		if c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == '<' || c == '>' || c == '\\' ||
			c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			break
		}
		e++
	}
	at, colon := -1, -1
	for j := i; j < e; j++ {
		switch {
		case s[j] == '@':
			at = j
		case s[j] == ':' && colon < 0:
			colon = j
		}
	}
	if at < 0 || colon < 0 || colon > at || colon+1 == at {
		return -1, -1
	}
	return colon + 1, at
}

const (
	pemBegin = "-----BEGIN "
	pemEndOf = "-----END "
	pemDash  = "-----"
)

// pemEnd returns the end of the PEM private key block that starts at i,
// or -1 when none starts there.
func pemEnd[T text](s T, i int) int {
	if !hasPrefix(s, i, pemBegin) {
		return -1
	}
	ls := i + len(pemBegin)
	le := ls
	for le < len(s) && le-ls < 64 && s[le] != '-' && s[le] != '\n' && s[le] != '\r' {
		le++
	}
	if !hasPrefix(s, le, pemDash) || index(s[ls:le], "PRIVATE KEY") < 0 {
		return -1
	}
	label := s[ls:le]
	for j := le + len(pemDash); ; {
		k := index(s[j:], pemEndOf)
		if k < 0 {
			return len(s)
		}
		j += k + len(pemEndOf)
		if len(s)-j >= len(label) && string(s[j:j+len(label)]) == string(label) && hasPrefix(s, j+len(label), pemDash) {
			return j + len(label) + len(pemDash)
		}
	}
}

// wordPattern returns the secret that starts at i, at the start of a word
// (for "Bearer abc", only "abc"), or -1, -1.
func wordPattern[T text](s T, i int, st *state) (int, int) {
	switch s[i] {
	case 'B', 'b':
		for _, w := range [...]string{"bearer", "basic"} {
			if !hasPrefixFold(s, i, w) {
				continue
			}
			j := i + len(w)
			if j == len(s) || !is(s[j], clsSpace) {
				continue
			}
			for j < len(s) && is(s[j], clsSpace) {
				j++
			}
			if e := tokenEnd(s, j); credential(s[j:e]) {
				return j, e
			}
		}
	case 'e':
		if !hasPrefix(s, i, "eyJ") {
			return -1, -1
		}
		e, dots, first, second := i, 0, 0, 0
		for ; e < len(s) && is(s[e], clsJWT); e++ {
			if s[e] == '.' {
				dots++
				switch dots {
				case 1:
					first = e
				case 2:
					second = e
				}
			}
		}
		if dots >= 2 && first-i >= 10 && second-first > 2 {
			return i, e
		}
	case 'A':
		if len(s)-i >= 20 && (hasPrefix(s, i, "AKIA") || hasPrefix(s, i, "ASIA") || hasPrefix(s, i, "ABIA") || hasPrefix(s, i, "ACCA")) {
			ok := i+20 == len(s) || !is(s[i+20], clsWord)
			for j := i + 4; ok && j < i+20; j++ {
				ok = 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9'
			}
			if ok {
				st.aws = true
				return i, i + 20
			}
		}
	}
	for _, p := range prefixesBy[s[i]] {
		if len(s)-i < len(p.prefix)+p.min || s[i+1] != p.prefix[1] || !hasPrefix(s, i, p.prefix) {
			continue
		}
		e := i + len(p.prefix)
		for e < len(s) && p.chars(s[e]) {
			e++
		}
		if e-i-len(p.prefix) >= p.min {
			return i, e
		}
	}
	return -1, -1
}

// credential reports whether t, after "Bearer " or "Basic ", is a
// credential rather than a word of prose: at least 8 characters and not
// only letters with at most the first one upper case. What follows a
// placeholder in t is not looked at: that part was redacted by another
// rule, and a second pass must judge t as the first did.
func credential[T text](t T) bool {
	switch k := index(t, Placeholder); {
	case k == 0:
		return true
	case k > 0:
		t = t[:k]
	}
	if len(t) < 8 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || i == 0 && 'A' <= c && c <= 'Z') {
			return true
		}
	}
	return false
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }

func alnumUnderscore(c byte) bool { return alnum(c) || c == '_' }

func alnumDash(c byte) bool { return alnum(c) || c == '-' }

func base64URL(c byte) bool { return alnum(c) || c == '-' || c == '_' }

type tokenPrefix struct {
	prefix string
	min    int // characters after the prefix
	chars  func(byte) bool
}

// prefixesBy holds tokenPrefixes by their first byte.
var prefixesBy = func() (t [256][]tokenPrefix) {
	for _, p := range tokenPrefixes {
		t[p.prefix[0]] = append(t[p.prefix[0]], p)
	}
	return t
}()

var tokenPrefixes = []tokenPrefix{
	{"ghp_", 30, alnum}, {"gho_", 30, alnum}, {"ghu_", 30, alnum}, {"ghs_", 30, alnum}, {"ghr_", 30, alnum},
	{"github_pat_", 22, alnumUnderscore},
	{"glpat-", 20, base64URL},
	{"xoxb-", 10, alnumDash}, {"xoxp-", 10, alnumDash}, {"xoxa-", 10, alnumDash}, {"xoxr-", 10, alnumDash},
	{"xoxs-", 10, alnumDash}, {"xoxe-", 10, alnumDash},
	{"sk_live_", 16, alnum}, {"rk_live_", 16, alnum}, {"sk_test_", 16, alnum}, {"rk_test_", 16, alnum},
	{"sk-proj-", 20, base64URL},
	{"AIza", 35, base64URL},
	{"npm_", 30, alnum},
}

func hasPrefix[T text](s T, i int, p string) bool {
	return i >= 0 && len(s)-i >= len(p) && string(s[i:i+len(p)]) == p
}

// hasPrefixFold is hasPrefix ignoring ASCII case; p is lower case.
func hasPrefixFold[T text](s T, i int, p string) bool {
	if len(s)-i < len(p) {
		return false
	}
	for j := 0; j < len(p); j++ {
		if s[i+j]|0x20 != p[j] {
			return false
		}
	}
	return true
}

func index[T text](s T, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i] == sub[0] && string(s[i:i+len(sub)]) == sub {
			return i
		}
	}
	return -1
}
