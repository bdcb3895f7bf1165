package ingest

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/redact"
)

// encodePayload writes an encoded google.protobuf.Struct as JSON for a
// jsonb column, replacing the values of sensitive keys (recursively,
// through objects and arrays) with redact.Placeholder, and so the secrets
// that the value rules find in strings and in keys' own text (see package
// redact; what the SDK already redacted is left as it is). It refuses what
// jsonb cannot store (text that is not UTF-8 or holds NUL, NaN and
// infinities), payloads deeper than wire.MaxPayloadDepth or larger than
// wire.MaxPayloadBytes, and malformed encodings; the reason is "" on success.
func encodePayload(structBytes []byte, keys redact.Keys) ([]byte, string) {
	e := payloadEncoder{keys: keys, buf: make([]byte, 0, 2*len(structBytes)+16)}
	e.object(structBytes, 1)
	e.tooBig()
	if e.reason != "" {
		return nil, e.reason
	}
	return e.buf, ""
}

type payloadEncoder struct {
	keys   redact.Keys
	buf    []byte
	reason string
}

func (e *payloadEncoder) fail(reason string) {
	if e.reason == "" {
		e.reason = reason
	}
}

func (e *payloadEncoder) malformed() { e.fail("malformed google.protobuf.Struct") }

func (e *payloadEncoder) tooBig() bool {
	if len(e.buf) > wire.MaxPayloadBytes {
		e.fail("larger than " + strconv.Itoa(wire.MaxPayloadBytes) + " bytes as JSON")
		return true
	}
	return false
}

func (e *payloadEncoder) tooDeep(depth int) bool {
	if depth > wire.MaxPayloadDepth {
		e.fail("nested deeper than " + strconv.Itoa(wire.MaxPayloadDepth) + " levels")
		return true
	}
	return false
}

// object writes a Struct: field 1 holds its map entries, each an
// embedded message with the key in field 1 and the Value in field 2.
func (e *payloadEncoder) object(b []byte, depth int) {
	if e.tooDeep(depth) {
		return
	}
	e.buf = append(e.buf, '{')
	first := true
	e.each(b, func(entry []byte) {
		key, value, ok := mapEntry(entry)
		if !ok {
			e.malformed()
			return
		}
		if !first {
			e.buf = append(e.buf, ',')
		}
		first = false
		e.text(key)
		e.buf = append(e.buf, ':')
		if e.keys.SensitiveBytes(key) {
			e.quote([]byte(redact.Placeholder))
			return
		}
		e.value(value, depth)
	})
	e.buf = append(e.buf, '}')
}

// each calls item with every length-delimited field 1 of a message (the
// entries of a Struct, the values of a ListValue), skipping other fields,
// until the payload fails a check.
func (e *payloadEncoder) each(b []byte, item func([]byte)) {
	for len(b) > 0 && e.reason == "" && !e.tooBig() {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			e.malformed()
			return
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				e.malformed()
				return
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			e.malformed()
			return
		}
		b = b[n:]
		item(v)
	}
}

// mapEntry splits a map entry message into its key and value bytes.
func mapEntry(b []byte) (key, value []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, false
			}
			if num == 1 {
				key = v
			} else {
				value = v
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, nil, false
		}
		b = b[n:]
	}
	return key, value, true
}

// value writes a google.protobuf.Value: a oneof of null (1), number (2),
// string (3), bool (4), struct (5) and list (6); the last one set wins,
// and none set is null.
func (e *payloadEncoder) value(b []byte, depth int) {
	kind, raw, num := protowire.Number(0), []byte(nil), uint64(0)
	for len(b) > 0 {
		f, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			e.malformed()
			return
		}
		b = b[n:]
		switch {
		case (f == 1 || f == 4) && typ == protowire.VarintType:
			num, n = protowire.ConsumeVarint(b)
			kind = f
		case f == 2 && typ == protowire.Fixed64Type:
			num, n = protowire.ConsumeFixed64(b)
			kind = f
		case (f == 3 || f == 5 || f == 6) && typ == protowire.BytesType:
			raw, n = protowire.ConsumeBytes(b)
			kind = f
		default:
			n = protowire.ConsumeFieldValue(f, typ, b)
		}
		if n < 0 {
			e.malformed()
			return
		}
		b = b[n:]
	}
	switch kind {
	case 2:
		f := math.Float64frombits(num)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			e.fail("contains NaN or Infinity, which JSON cannot hold")
			return
		}
		e.buf = strconv.AppendFloat(e.buf, f, 'g', -1, 64)
	case 3:
		e.text(raw)
	case 4:
		e.buf = strconv.AppendBool(e.buf, num != 0)
	case 5:
		e.object(raw, depth+1)
	case 6:
		e.list(raw, depth+1)
	default: // null, or nothing set
		e.buf = append(e.buf, "null"...)
	}
}

// list writes a ListValue: its Values in field 1.
func (e *payloadEncoder) list(b []byte, depth int) {
	if e.tooDeep(depth) {
		return
	}
	e.buf = append(e.buf, '[')
	first := true
	e.each(b, func(item []byte) {
		if !first {
			e.buf = append(e.buf, ',')
		}
		first = false
		e.value(item, depth)
	})
	e.buf = append(e.buf, ']')
}

const hexDigits = "0123456789abcdef"

// text appends s, a key or a string value, as a JSON string with the
// secrets the value rules find in it redacted. It refuses text that is not
// UTF-8 and NUL, which jsonb cannot store even escaped.
func (e *payloadEncoder) text(s []byte) {
	if !utf8.Valid(s) {
		e.fail("contains text that is not valid UTF-8")
		return
	}
	if bytes.IndexByte(s, 0) >= 0 {
		e.fail(`contains a NUL character (\u0000), which Postgres jsonb cannot store`)
		return
	}
	e.quote(e.keys.RedactBytes(s))
}

// quote appends s, valid UTF-8 without NUL, as a JSON string.
func (e *payloadEncoder) quote(s []byte) {
	e.buf = append(e.buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		e.buf = append(e.buf, s[start:i]...)
		switch c {
		case '"', '\\':
			e.buf = append(e.buf, '\\', c)
		case '\n':
			e.buf = append(e.buf, '\\', 'n')
		case '\r':
			e.buf = append(e.buf, '\\', 'r')
		case '\t':
			e.buf = append(e.buf, '\\', 't')
		default:
			e.buf = append(e.buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	e.buf = append(e.buf, s[start:]...)
	e.buf = append(e.buf, '"')
}
