// Package redact removes secrets from payloads. The worker SDK and the
// server both apply it, with the same rules and the same test vectors
// (testdata/vectors.json), so a payload is redacted before it leaves the
// worker and again before it is stored, whichever client sent it.
//
// Two rules:
//
//   - Keys. A key is sensitive when its normal form (see Normalize: NFKD,
//     case folding, look-alike letters, only letters and digits kept),
//     without trailing digits, ends with one of the sensitive words:
//     "accessToken", "X-Auth-Token" and "refresh_token" all end with
//     "token"; "API_KEY", "api-key", "Api Key" and "ａｐｉＫｅｙ" are one key;
//     "password2" is "password". The value of a sensitive key, whatever it
//     is (string, number, object, array), becomes Placeholder.
//   - Values. Every string (and every key's own text) is searched for
//     secrets, whatever its key: "name=value" and "name: value" pairs whose
//     name is sensitive by the rule above (query strings, form bodies,
//     header lines, JSON or YAML held in a string), the password of a
//     URL's user info, Bearer and Basic credentials, JWTs, PEM private
//     keys, AWS access key ids (and 40-character secrets after one), and a
//     few providers' token formats (see Keys.RedactString).
//
// Only the secret itself is replaced, not the whole string: payload
// strings are often URLs, header dumps and messages whose other parts are
// what an operator needs to understand a failure, and the placeholder
// shows where something was removed. Spans are chosen conservatively (a
// "name: value" header line is redacted to its end, a quoted value to its
// closing quote), and the result is stable: redacting it again changes
// nothing, which is what lets the server re-apply the rules to what the
// SDK already redacted.
package redact

import (
	"slices"
	"sync"
	"unicode/utf8"
)

// Placeholder replaces the value of every sensitive key, whatever it was
// (string, number, object or array), and every secret found in a string.
const Placeholder = "[REDACTED]"

// DefaultKeys returns the sensitive words used when none are configured:
// passwords, tokens (JWTs and bearer tokens too), secrets, API, access,
// private and signing keys, credentials, auth and authorization, cookies
// and sessions, one-time codes and PINs, card security codes and
// connection strings. A new slice each time: callers may change it.
func DefaultKeys() []string { return slices.Clone(defaultWords[:]) }

var defaultWords = [...]string{
	"password", "passwords", "passwd", "pwd", "pw", "pass", "passphrase", "passcode",
	"secret", "secrets", "token", "tokens", "jwt", "bearer",
	"apikey", "apikeys", "accesskey", "secretkey", "privatekey", "privkey", "signingkey",
	"encryptionkey", "masterkey", "clientkey", "authkey",
	"credential", "credentials", "creds", "auth", "authorization",
	"cookie", "cookies", "session", "sessionid", "sessid", "sessionkey",
	"otp", "totp", "hotp", "onetimecode", "onetimepassword", "verificationcode", "mfacode",
	"smscode", "authcode", "securitycode", "pin", "pincode", "cvv", "cvc",
	"dsn", "connectionstring",
}

// Keys is a set of sensitive words and the value rules. The zero value
// redacts nothing; New gives the value rules even without words.
type Keys struct {
	m *matcher
}

// maxTail is the longest word matched without allocating: keys are
// compared by their end, so only that many normalised characters of a key
// are ever looked at.
const maxTail = 64

type matcher struct {
	byLast [256][]string // normalised words by their last byte
	maxLen int           // of the longest word, in bytes
}

// New returns the set of words, normalised as keys are (so
// "Shop-Secret-Hint" matches "shop_secret_hint"); words that normalise to
// nothing are ignored. The value rules are always on, with the words
// deciding which "name=value" names are sensitive.
func New(words []string) Keys {
	m := &matcher{}
	seen := map[string]bool{}
	for _, w := range words {
		n := stripDigits(Normalize(w))
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		m.byLast[n[len(n)-1]] = append(m.byLast[n[len(n)-1]], n)
		m.maxLen = max(m.maxLen, len(n))
	}
	return Keys{m: m}
}

var defaultKeys = sync.OnceValue(func() Keys { return New(DefaultKeys()) })

// Default is New(DefaultKeys()).
func Default() Keys { return defaultKeys() }

// Sensitive reports whether key names a secret.
func (k Keys) Sensitive(key string) bool { return sensitive(k.m, key) }

// SensitiveBytes is Sensitive for a key held as bytes.
func (k Keys) SensitiveBytes(key []byte) bool { return sensitive(k.m, key) }

// text is what the rules read: a string, or bytes from the wire.
type text interface{ ~string | ~[]byte }

// sensitive reports whether key ends with a word. Keys in ASCII are
// normalised from their end into a buffer on the stack, no further than
// the longest word. Other keys are normalised whole (appendNormal), into a
// buffer on the stack too unless they are long. No allocation either way.
func sensitive[T text](m *matcher, key T) bool {
	if m == nil || m.maxLen == 0 {
		return false
	}
	if m.maxLen <= maxTail {
		var tail [maxTail]byte
		n, digits := 0, true
		for i := len(key) - 1; i >= 0 && n < m.maxLen; i-- {
			c := key[i]
			if c >= utf8.RuneSelf {
				return sensitiveUnicode(m, key)
			}
			if c = asciiFold[c]; c == 0 || digits && c <= '9' {
				continue
			}
			digits = false
			n++
			tail[maxTail-n] = c
		}
		return endsWithWord(m, tail[maxTail-n:])
	}
	return sensitiveUnicode(m, key)
}

func sensitiveUnicode[T text](m *matcher, key T) bool {
	var buf [256]byte
	return endsWithWord(m, stripDigits(appendNormal(buf[:0], key)))
}

// endsWithWord reports whether the normalised key n ends with a word.
func endsWithWord[T text](m *matcher, n T) bool {
	if len(n) == 0 {
		return false
	}
	for _, w := range m.byLast[n[len(n)-1]] {
		// The byte before the last rules most words out without a call.
		if len(w) <= len(n) && (len(w) < 2 || w[len(w)-2] == n[len(n)-2]) && string(n[len(n)-len(w):]) == w {
			return true
		}
	}
	return false
}
