package validate

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/platforma/platforma/services/kit/apierr"
)

// Kind is one kind of text field, with one rule. Every string a client
// sends is of one kind, and every service, every list filter and the SDKs'
// sanitisers apply that kind's rule: what one service stores, every other
// accepts (the op log forwards login outcomes to profiles, so a mismatch
// would lose them), and a stored value can always be used as a filter.
//
// Every kind refuses what Postgres cannot store (invalid UTF-8, NUL) and
// bounds the length in bytes. Exact kinds name something and are compared
// byte for byte, so they also refuse control characters and surrounding
// whitespace: " shop-1" and "shop-1" would otherwise be two accounts that
// look alike to every operator.
type Kind struct {
	name     string
	maxBytes int
	exact    bool
}

// The kinds of text field.
var (
	// Identifier names something outside platforma: a platform account,
	// a shop or business id, a resource, a proxy.
	Identifier = Kind{name: "identifier", maxBytes: 255, exact: true}
	// Code is a short word clients choose to classify things: error
	// types, review sources.
	Code = Kind{name: "code", maxBytes: 64, exact: true}
	// Message is free text for people: an error message.
	Message = FreeText(4096)
	// UserAgent is a browser's user agent string.
	UserAgent = FreeText(512)
)

// FreeText is text for people of at most maxBytes bytes: any valid UTF-8
// but NUL, newlines and tabs included.
func FreeText(maxBytes int) Kind {
	return Kind{name: "free text", maxBytes: maxBytes}
}

// MaxBytes is the longest value the kind accepts, in bytes of UTF-8.
func (k Kind) MaxBytes() int { return k.maxBytes }

// Problem returns why s is not a valid value of the kind, or "" when it
// is. The empty string is valid; whether it may be missing is the field's
// business (see Require).
func (k Kind) Problem(s string) string { return problem(k, s) }

// ProblemBytes is Problem for text still in its wire bytes.
func (k Kind) ProblemBytes(b []byte) string { return problem(k, b) }

func problem[T ~string | ~[]byte](k Kind, s T) string {
	switch {
	case len(s) > k.maxBytes:
		return "at most " + strconv.Itoa(k.maxBytes) + " bytes, got " + strconv.Itoa(len(s))
	case !validUTF8(s):
		return "must be valid UTF-8"
	case indexNUL(s) >= 0:
		return "must not contain NUL bytes"
	case !k.exact || len(s) == 0:
		return ""
	case hasControl(s):
		return "must not contain control characters"
	case unicode.IsSpace(firstRune(s)) || unicode.IsSpace(lastRune(s)):
		return "must not start or end with whitespace"
	}
	return ""
}

// Check records a violation when s is not a valid value of the kind; the
// empty string passes. It reports whether s is acceptable.
func (k Kind) Check(v *apierr.Violations, field, s string) bool {
	if p := k.Problem(s); p != "" {
		v.Add(field, p)
		return false
	}
	return true
}

// Require is Check that also refuses the empty string.
func (k Kind) Require(v *apierr.Violations, field, s string) bool {
	if s == "" {
		v.Add(field, "required")
		return false
	}
	return k.Check(v, field, s)
}

// Sanitize returns the value of the kind closest to s: invalid UTF-8 and
// NUL (and, in exact kinds, control characters) become U+FFFD, exact kinds
// lose surrounding whitespace, and the result is cut to MaxBytes on a rune
// boundary. Valid values come back unchanged. The SDKs use it so that a
// worker's sloppy text is stored rather than refused; the services never
// sanitise, they refuse.
func (k Kind) Sanitize(s string) string {
	if k.Problem(s) == "" {
		return s
	}
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if k.exact {
		s = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return '\uFFFD'
			}
			return r
		}, s)
		s = strings.TrimFunc(s, unicode.IsSpace)
	}
	s = truncate(s, k.maxBytes)
	if k.exact {
		// The cut may have left whitespace at the end.
		s = strings.TrimRightFunc(s, unicode.IsSpace)
	}
	return s
}

// truncate cuts s to at most max bytes on a rune boundary.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func validUTF8[T ~string | ~[]byte](s T) bool {
	switch x := any(s).(type) {
	case string:
		return utf8.ValidString(x)
	default:
		return utf8.Valid([]byte(s))
	}
}

func indexNUL[T ~string | ~[]byte](s T) int {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return i
		}
	}
	return -1
}

func hasControl[T ~string | ~[]byte](s T) bool {
	for _, r := range string(s) {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

func firstRune[T ~string | ~[]byte](s T) rune {
	if b, ok := any(s).([]byte); ok {
		r, _ := utf8.DecodeRune(b)
		return r
	}
	r, _ := utf8.DecodeRuneInString(string(s))
	return r
}

func lastRune[T ~string | ~[]byte](s T) rune {
	if b, ok := any(s).([]byte); ok {
		r, _ := utf8.DecodeLastRune(b)
		return r
	}
	r, _ := utf8.DecodeLastRuneInString(string(s))
	return r
}
