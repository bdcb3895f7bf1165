package oplogclient

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/redact"
)

// Payload limits, a little under the server's, so what the SDK sends is
// not refused for its size: the SDK measures the encoded Struct, the
// server the JSON it becomes, and the two differ by a little.
const (
	maxPayloadDepth = wire.MaxPayloadDepth - 1
	maxPayloadBytes = wire.MaxPayloadBytes - 1<<10
)

// Payload keys and strings are free text (the server refuses invalid
// UTF-8 and NUL in them, which jsonb cannot store).
var (
	payloadKey    = validate.FreeText(256)
	payloadString = validate.FreeText(maxPayloadBytes)
)

// encodePayload encodes m as a google.protobuf.Struct, replacing the values
// of sensitive keys with redact.Placeholder at every depth, and so the
// secrets that the value rules find in strings and in keys' own text (see
// package redact). Strings are made valid for the server, non-finite
// numbers become strings, values deeper than the limit become
// "[too deep]", and a payload too large to store is replaced by
// {"truncated": true, "approx_bytes": n}. Encoding at Log time is also the
// copy that lets the caller reuse m. The result is never nil: an empty map
// is an empty object, not "no payload".
func encodePayload(m map[string]any, keys redact.Keys) []byte {
	b := appendStruct(make([]byte, 0, 256), m, keys, 1)
	if len(b) > maxPayloadBytes {
		return appendStruct(make([]byte, 0, 64), map[string]any{"truncated": true, "approx_bytes": len(b)}, keys, 1)
	}
	return b
}

// Nested messages are written in place: room for the longest length
// varint is kept before the body, and the body moved back once its length
// is known. No buffer per level.
const lenRoom = 5

func beginNested(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return append(b, 0, 0, 0, 0, 0), len(b)
}

func endNested(b []byte, start int) []byte {
	n := len(b) - start - lenRoom
	var l [lenRoom]byte
	size := protowire.AppendVarint(l[:0], uint64(n))
	copy(b[start+len(size):], b[start+lenRoom:])
	copy(b[start:], size)
	return b[:start+len(size)+n]
}

// appendStruct appends the fields of a Struct: its map entries, field 1,
// each with the key in field 1 and the Value in field 2.
func appendStruct(b []byte, m map[string]any, keys redact.Keys, depth int) []byte {
	for k, v := range m {
		k = payloadKey.Sanitize(k)
		sensitive := keys.Sensitive(k)
		var entry, value int
		b, entry = beginNested(b, 1)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, keys.RedactString(k))
		b, value = beginNested(b, 2)
		if sensitive {
			b = appendString(b, redact.Placeholder)
		} else {
			b = appendValue(b, v, keys, depth)
		}
		b = endNested(b, value)
		b = endNested(b, entry)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, payloadString.Sanitize(s))
}

// appendText appends a string of the caller's, with the secrets in it
// redacted. The value rules keep valid UTF-8 valid and add no NUL, so the
// sanitised string needs no second pass.
func appendText(b []byte, s string, keys redact.Keys) []byte {
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, keys.RedactString(payloadString.Sanitize(s)))
}

func appendNumber(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return appendString(b, strconv.FormatFloat(f, 'g', -1, 64))
	}
	b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(f))
}

// appendValue appends the fields of a google.protobuf.Value for v.
func appendValue(b []byte, v any, keys redact.Keys, depth int) []byte {
	switch x := v.(type) {
	case nil:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		return protowire.AppendVarint(b, 0)
	case string:
		return appendText(b, x, keys)
	case bool:
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(x))
	case int:
		return appendNumber(b, float64(x))
	case int8:
		return appendNumber(b, float64(x))
	case int16:
		return appendNumber(b, float64(x))
	case int32:
		return appendNumber(b, float64(x))
	case int64:
		return appendNumber(b, float64(x))
	case uint:
		return appendNumber(b, float64(x))
	case uint8:
		return appendNumber(b, float64(x))
	case uint16:
		return appendNumber(b, float64(x))
	case uint32:
		return appendNumber(b, float64(x))
	case uint64:
		return appendNumber(b, float64(x))
	case float32:
		return appendNumber(b, float64(x))
	case float64:
		return appendNumber(b, x)
	case time.Time:
		return appendString(b, x.UTC().Format(time.RFC3339Nano))
	case time.Duration:
		return appendString(b, x.String())
	case map[string]any:
		if depth >= maxPayloadDepth {
			return appendString(b, "[too deep]")
		}
		var at int
		b, at = beginNested(b, 5)
		b = appendStruct(b, x, keys, depth+1)
		return endNested(b, at)
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, v := range x {
			m[k] = v
		}
		return appendValue(b, m, keys, depth)
	case []any:
		if depth >= maxPayloadDepth {
			return appendString(b, "[too deep]")
		}
		var list int
		b, list = beginNested(b, 6)
		for _, item := range x {
			var at int
			b, at = beginNested(b, 1)
			b = appendValue(b, item, keys, depth+1)
			b = endNested(b, at)
		}
		return endNested(b, list)
	case []string:
		items := make([]any, len(x))
		for i, s := range x {
			items[i] = s
		}
		return appendValue(b, items, keys, depth)
	case error:
		return appendText(b, x.Error(), keys)
	case fmt.Stringer:
		return appendText(b, x.String(), keys)
	default:
		return appendText(b, fmt.Sprint(x), keys)
	}
}
