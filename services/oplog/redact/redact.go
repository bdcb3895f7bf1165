// Package redact decides which payload keys hold secrets. The worker SDK
// and the server both apply it, so a payload is redacted before it leaves
// the worker and again before it is stored, whichever client sent it.
//
// Keys are compared after normalisation: lower case, with separators
// ('-', '_', '.', ' ') removed, so apiKey, API_KEY, api-key and "Api Key"
// are one key. A key is sensitive when its normalised form ends with one of
// the configured words: "accessToken", "x-auth-token" and "refresh_token"
// all end with "token".
package redact

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Placeholder replaces the value of every sensitive key, whatever it was
// (string, number, object or array).
const Placeholder = "[REDACTED]"

// DefaultKeys are the sensitive words used when none are configured:
// passwords, tokens, secrets, API keys, authorization headers, cookies,
// session ids and one-time codes.
var DefaultKeys = []string{
	"password", "passwords", "passwd", "pwd", "passphrase",
	"secret", "secrets", "token", "tokens", "apikey", "apikeys", "privatekey", "credential", "credentials",
	"authorization", "cookie", "cookies", "sessionid", "sessionkey",
	"otp", "totp", "onetimecode", "onetimepassword", "verificationcode", "mfacode", "smscode", "pincode",
}

// Keys is a set of sensitive words. The zero value redacts nothing.
type Keys struct {
	words []string
	raw   [][]byte // words as bytes, for SensitiveBytes
}

// New returns the set of words, normalised; empty words are ignored.
func New(words []string) Keys {
	var k Keys
	for _, w := range words {
		if n := Normalize(w); n != "" {
			k.words = append(k.words, n)
			k.raw = append(k.raw, []byte(n))
		}
	}
	return k
}

// Default is New(DefaultKeys).
func Default() Keys { return New(DefaultKeys) }

// Sensitive reports whether key names a secret.
func (k Keys) Sensitive(key string) bool {
	if len(k.words) == 0 {
		return false
	}
	n := Normalize(key)
	for _, w := range k.words {
		if strings.HasSuffix(n, w) {
			return true
		}
	}
	return false
}

// SensitiveBytes is Sensitive for a key held as bytes; it does not
// allocate for keys that are already in normal form.
func (k Keys) SensitiveBytes(key []byte) bool {
	if len(k.raw) == 0 {
		return false
	}
	if !isNormal(key) {
		return k.Sensitive(string(key))
	}
	for _, w := range k.raw {
		if bytes.HasSuffix(key, w) {
			return true
		}
	}
	return false
}

func isNormal[T string | []byte](key T) bool {
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') || c == '-' || c == '_' || c == '.' || c == ' ' {
			return false
		}
	}
	return true
}

// Normalize lower-cases key and drops separators and spaces.
func Normalize(key string) string {
	if isNormal(key) {
		return key
	}
	var b strings.Builder
	b.Grow(len(key))
	for _, r := range key {
		switch {
		case r == '-' || r == '_' || r == '.' || unicode.IsSpace(r):
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}
