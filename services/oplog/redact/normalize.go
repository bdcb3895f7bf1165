package redact

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Normalize returns the form in which keys are compared with the
// sensitive words. Character by character:
//
//  1. compatibility decomposition (NFKD, the mapping of NFKC without the
//     recomposition): full-width, mathematical and circled letters and
//     ligatures become their plain letters, accented letters a plain letter
//     and a combining mark;
//  2. case folding (each character to the lower case of its upper case,
//     which folds ſ, ς, ı and the like; ß becomes ss), then NFKD again;
//  3. letters of other scripts drawn like Latin ones (Cyrillic а, е, о, р,
//     с, ..., Greek α, ο, ρ, ...) become those Latin letters;
//  4. only letters and digits are kept: separators, punctuation, symbols,
//     combining marks, zero-width and other invisible characters (format
//     characters and default-ignorable code points such as U+200B, U+200D,
//     U+2060, U+FEFF, U+00AD, U+3164) are dropped.
//
// So "API_KEY", "api-key", "Api Key", "password:", "pass\u200bword",
// "ｐａｓｓｗｏｒｄ" and "раssword" (Cyrillic р, а) normalise to "apikey" and
// "password". It works from tables, a character at a time, without
// allocating beyond the result; keys already in normal form (lower-case
// ASCII letters and digits) are returned as they are.
func Normalize(key string) string {
	if isNormalASCII(key) {
		return key
	}
	var buf [128]byte
	return string(appendNormal(buf[:0], key))
}

// appendNormal appends the normal form of s to dst.
func appendNormal[T text](dst []byte, s T) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if f := asciiFold[c]; f != 0 {
				dst = append(dst, f)
			}
			i++
			continue
		}
		var rb [utf8.UTFMax]byte
		n := copy(rb[:], s[i:min(i+utf8.UTFMax, len(s))])
		r, size := utf8.DecodeRune(rb[:n])
		i += size
		if r == utf8.RuneError && size == 1 {
			continue
		}
		d := norm.NFKD.Properties(rb[:size]).Decomposition()
		if d == nil {
			dst = appendFolded(dst, r, true)
			continue
		}
		for len(d) > 0 {
			r, size := utf8.DecodeRune(d)
			d = d[size:]
			dst = appendFolded(dst, r, true)
		}
	}
	return dst
}

// appendFolded appends the case-folded form of r, a decomposed character,
// when it is a letter or a digit. again says whether a folded character
// that has a decomposition of its own may be decomposed.
func appendFolded(dst []byte, r rune, again bool) []byte {
	if r < utf8.RuneSelf {
		if f := asciiFold[r]; f != 0 {
			dst = append(dst, f)
		}
		return dst
	}
	f := unicode.ToLower(unicode.ToUpper(r))
	if f != r && f >= utf8.RuneSelf && again {
		var rb [utf8.UTFMax]byte
		if d := norm.NFKD.Properties(rb[:utf8.EncodeRune(rb[:], f)]).Decomposition(); d != nil {
			for len(d) > 0 {
				r, size := utf8.DecodeRune(d)
				d = d[size:]
				dst = appendFolded(dst, r, false)
			}
			return dst
		}
	}
	switch l, ok := lookalike[f]; {
	case ok:
		return append(dst, l)
	case f == 'ß' || f == 'ẞ':
		return append(dst, 's', 's')
	case f < utf8.RuneSelf:
		if a := asciiFold[f]; a != 0 {
			dst = append(dst, a)
		}
		return dst
	case (unicode.IsLetter(f) || unicode.IsDigit(f)) && !unicode.Is(unicode.Other_Default_Ignorable_Code_Point, f):
		return utf8.AppendRune(dst, f)
	}
	return dst
}

// asciiFold maps an ASCII letter to lower case and a digit to itself;
// everything else (separators, punctuation, controls) to 0: dropped.
var asciiFold = func() (t [utf8.RuneSelf]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c)
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = byte(c)
		t[c-'a'+'A'] = byte(c)
	}
	return t
}()

// isNormalASCII reports whether s holds only lower-case ASCII letters and
// digits: its own normal form.
func isNormalASCII[T text](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || asciiFold[c] != c || c == 0 {
			return false
		}
	}
	return true
}

// lookalike maps letters of other scripts, as they are after case folding,
// to the Latin letter they are drawn like. Only letters that look the same
// as a Latin one in upper or lower case are listed.
var lookalike = map[rune]byte{
	// Cyrillic
	'а': 'a', 'в': 'b', 'е': 'e', 'і': 'i', 'ј': 'j', 'к': 'k', 'м': 'm', 'н': 'h', 'о': 'o',
	'р': 'p', 'с': 'c', 'т': 't', 'у': 'y', 'х': 'x', 'ѕ': 's', 'һ': 'h', 'ԁ': 'd', 'ԛ': 'q',
	'ԝ': 'w', 'ӏ': 'l', 'ү': 'y',
	// Greek
	'α': 'a', 'β': 'b', 'ε': 'e', 'ι': 'i', 'κ': 'k', 'ο': 'o', 'ρ': 'p', 'τ': 't', 'χ': 'x',
	'ζ': 'z', 'ϲ': 'c', 'ϳ': 'j',
	// Latin letters without a decomposition, and Armenian
	'ɡ': 'g', 'ȷ': 'j', 'օ': 'o',
}

// stripDigits drops the digits at the end of a normalised key: "password2"
// and "otp_1" are compared as "password" and "otp".
func stripDigits[T text](n T) T {
	for len(n) > 0 {
		var rb [utf8.UTFMax]byte
		k := max(len(n)-utf8.UTFMax, 0)
		c := copy(rb[:], n[k:])
		r, size := utf8.DecodeLastRune(rb[:c])
		if !unicode.IsDigit(r) {
			break
		}
		n = n[:len(n)-size]
	}
	return n
}
