package redact

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// The canary is a secret that must never survive redaction.
const canary = "CANARY-s3cr3t-7f3a"

// spell writes word as a worker's payload might: ops is a little program,
// two bytes per step (what to do, where), of changes that keep the key
// meaning the same to a reader: case, separators and invisible
// characters, full-width, mathematical, accented and look-alike letters,
// combining marks, a prefix, trailing digits.
func spell(word string, ops []byte) string {
	r := []rune(word)
	for len(ops) >= 2 && len(r) < 200 {
		op, at := ops[0], int(ops[1])
		ops = ops[2:]
		i := at % (len(r) + 1) // insertion point
		j := at % len(r)       // a rune to change
		c := r[j]
		pick := func(s string) rune { rs := []rune(s); return rs[at%len(rs)] }
		switch op % 10 {
		case 0:
			r[j] = unicode.ToUpper(c)
		case 1:
			r = insert(r, i, pick("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u3164\ufe0f"))
		case 2:
			r = insert(r, i, pick("_-. \t\u00a0\u3000:/|*"))
		case 3:
			if 'a' <= c && c <= 'z' {
				r[j] = c - 'a' + 'ａ'
			} else if 'A' <= c && c <= 'Z' {
				r[j] = c - 'A' + 'Ａ'
			}
		case 4:
			if 'a' <= c && c <= 'z' {
				r[j] = c - 'a' + '𝐚'
			} else if 'A' <= c && c <= 'Z' {
				r[j] = c - 'A' + '𝐀'
			}
		case 5:
			if l, ok := map[rune]rune{'a': 'а', 'e': 'е', 'o': 'о', 'p': 'р', 'c': 'с', 'x': 'х', 'y': 'у', 'i': 'і', 's': 'ѕ', 'k': 'κ', 't': 'τ'}[c]; ok {
				r[j] = l
			}
		case 6:
			r = insert(r, i, pick("\u0301\u0308\u0327\u20dd"))
		case 7:
			prefixes := []string{"new", "user_", "X-", "my ", "ｘ", "old.", "Proxy-"}
			r = append([]rune(prefixes[at%len(prefixes)]), r...)
		case 8:
			r = append(r, rune('0'+at%10))
		case 9:
			if l, ok := map[rune]rune{'a': 'á', 'e': 'é', 'o': 'ö', 'u': 'ü', 'i': 'ï', 'n': 'ñ', 'c': 'ç'}[c]; ok {
				r[j] = l
			}
		}
	}
	return string(r)
}

func insert(r []rune, i int, x rune) []rune {
	return append(r[:i], append([]rune{x}, r[i:]...)...)
}

// asName reports whether key can stand as a name in "name=value" text:
// name characters (ASCII letters, digits, _ . -, and other letters,
// digits, marks, format characters and spaces) with single ASCII spaces
// between them. Keys with other punctuation are keys only.
func asName(key string) bool {
	if key == "" || key[0] == ' ' || key[len(key)-1] == ' ' || strings.Contains(key, "  ") {
		return false
	}
	for _, r := range key {
		if r < utf8.RuneSelf && r != ' ' && !is(byte(r), clsName) || r >= utf8.RuneSelf && !nameRune(r) {
			return false
		}
	}
	return len(key) <= maxName // a name is read back that far
}

// FuzzKeySpelling: however a sensitive word is spelled, the key is
// sensitive, and a canary after it in "name=value" text is redacted.
func FuzzKeySpelling(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(0), []byte{1, 4, 3, 0, 3, 1, 3, 2, 3, 3, 3, 4, 3, 5, 3, 6, 3, 7})
	f.Add(uint8(17), []byte{0, 0, 0, 1, 2, 3, 7, 1})
	f.Add(uint8(9), []byte{5, 0, 5, 1, 4, 2, 9, 3, 6, 4, 8, 7})
	f.Add(uint8(30), []byte{2, 4, 1, 2, 7, 3, 2, 0})
	keys := Default()
	f.Fuzz(func(t *testing.T, word uint8, ops []byte) {
		key := spell(defaultWords[int(word)%len(defaultWords)], ops)
		if !keys.Sensitive(key) || !keys.SensitiveBytes([]byte(key)) {
			t.Fatalf("key %q (%+q) is not sensitive", key, key)
		}
		if !asName(key) {
			return
		}
		for _, s := range []string{
			key + "=" + canary,
			"?a=1&" + key + "=" + canary + "&b=2",
			key + ": " + canary,
			"x " + key + " = " + canary + " y",
			`{"` + key + `":"` + canary + `"}`,
			`{"` + key + `": 12, "` + key + `":` + canary + `}`,
			"[" + key + "]=" + canary,
		} {
			out := keys.RedactString(s)
			if strings.Contains(out, canary) {
				t.Fatalf("%q: the canary survived: %q", s, out)
			}
			if again := keys.RedactString(out); again != out {
				t.Fatalf("%q: not stable: %q then %q", s, out, again)
			}
		}
	})
}

// FuzzRedactValue: the value rules on any text never panic, keep valid
// UTF-8 valid, agree between strings and bytes, and are stable; a
// "password=" canary is redacted whatever text surrounds it. Normalize is
// stable too, and Sensitive's paths agree with it.
func FuzzRedactValue(f *testing.F) {
	for _, s := range []string{
		"", "Thank you!", "Authorization: Bearer abc", "https://u:p@h/x?token=1&a=b", "password=[REDACTED]]",
		"-----BEGIN RSA PRIVATE KEY-----\nMII\n-----END RSA PRIVATE KEY-----", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.x",
		"AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", `{\"pin\":\"1\"}`, "ｐａｓｓｗｏｒｄ：x", "a\xffb=c",
	} {
		f.Add(s, "")
	}
	f.Add("Bearer ", " tail")
	f.Add("\"password\": \"", "\"")
	keys := Default()
	f.Fuzz(func(t *testing.T, s, suffix string) {
		out := keys.RedactString(s)
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("%q: became invalid UTF-8: %q", s, out)
		}
		if b := keys.RedactBytes([]byte(s)); string(b) != out {
			t.Fatalf("%q: bytes %q, string %q", s, b, out)
		}
		if out != s && !strings.Contains(out, Placeholder) {
			t.Fatalf("%q: changed without a placeholder: %q", s, out)
		}
		if again := keys.RedactString(out); again != out {
			t.Fatalf("%q: not stable: %q then %q", s, out, again)
		}
		for _, tmpl := range []string{s + " password=" + canary + " " + suffix, s + "\npassword: " + canary + "\n" + suffix} {
			if out := keys.RedactString(tmpl); strings.Contains(out, canary) {
				t.Fatalf("%q: the canary survived: %q", tmpl, out)
			}
		}

		n := Normalize(s)
		if Normalize(n) != n {
			t.Fatalf("Normalize(%q) = %q is not stable: %q", s, n, Normalize(n))
		}
		if got, want := keys.Sensitive(s), endsWithWord(keys.m, stripDigits(n)); got != want {
			t.Fatalf("Sensitive(%q) = %v, Unicode path says %v", s, got, want)
		}
	})
}
