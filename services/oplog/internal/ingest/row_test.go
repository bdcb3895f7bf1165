package ingest

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/redact"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

var converter = Converter{Window: Window{Backfill: 35 * 24 * time.Hour, FutureSkew: 5 * time.Minute}, Keys: redact.Default()}

func goodLog() *oplogv1.OperationLog {
	return &oplogv1.OperationLog{
		Id:            uuid.NewString(),
		UserId:        uuid.NewString(),
		OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
		Outcome:       commonv1.Outcome_OUTCOME_FAILED,
		ErrorType:     "TIMEOUT",
		CreateTime:    timestamppb.New(now.Add(-time.Minute)),
	}
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

func nested(depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{"leaf": structpb.NewBoolValue(true)}}
	for i := 1; i < depth; i++ {
		s = &structpb.Struct{Fields: map[string]*structpb.Value{"next": structpb.NewStructValue(s)}}
	}
	return s
}

func TestConvertRefusesWhatCannotBeStored(t *testing.T) {
	t.Parallel()
	str := func(v string) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue(v)}}
	}
	tests := []struct {
		name   string
		mutate func(*oplogv1.OperationLog)
		field  string
	}{
		{"missing id", func(l *oplogv1.OperationLog) { l.Id = "" }, "id"},
		{"id not canonical", func(l *oplogv1.OperationLog) { l.Id = strings.ReplaceAll(l.Id, "-", "") }, "id"},
		{"user id garbage", func(l *oplogv1.OperationLog) { l.UserId = "'; DROP TABLE x; --" }, "user_id"},
		{"no create_time", func(l *oplogv1.OperationLog) { l.CreateTime = nil }, "create_time"},
		{"create_time invalid", func(l *oplogv1.OperationLog) { l.CreateTime = &timestamppb.Timestamp{Seconds: 1 << 62} }, "create_time"},
		{"too old", func(l *oplogv1.OperationLog) { l.CreateTime = timestamppb.New(now.Add(-36 * 24 * time.Hour)) }, "create_time"},
		{"future", func(l *oplogv1.OperationLog) { l.CreateTime = timestamppb.New(now.Add(6 * time.Minute)) }, "create_time"},
		{"no operation", func(l *oplogv1.OperationLog) { l.OperationType = 0 }, "operation_type"},
		{"unknown operation", func(l *oplogv1.OperationLog) { l.OperationType = 99 }, "operation_type"},
		{"no outcome", func(l *oplogv1.OperationLog) { l.Outcome = 0 }, "outcome"},
		{"unknown outcome", func(l *oplogv1.OperationLog) { l.Outcome = 3 }, "outcome"},
		{"unknown auth type", func(l *oplogv1.OperationLog) { l.AuthTypeDetected = -4 }, "auth_type_detected"},
		{"NUL in message", func(l *oplogv1.OperationLog) { l.ErrorMessage = "boom\x00" }, "error_message"},
		{"NUL in account", func(l *oplogv1.OperationLog) { l.PlatformAccountId = "\x00" }, "platform_account_id"},
		{"newline in error type", func(l *oplogv1.OperationLog) { l.ErrorType = "A\nB" }, "error_type"},
		// ProfileService refuses these accounts; so must Ingest, or the
		// relay would have to drop an acknowledged login outcome.
		{"space around account", func(l *oplogv1.OperationLog) { l.PlatformAccountId = " shop-1" }, "platform_account_id"},
		{"no-break space after account", func(l *oplogv1.OperationLog) { l.PlatformAccountId = "shop-1\u00a0" }, "platform_account_id"},
		{"account of spaces", func(l *oplogv1.OperationLog) { l.PlatformAccountId = "   " }, "platform_account_id"},
		{"space around proxy", func(l *oplogv1.OperationLog) { l.ProxyUsed = "proxy-1 " }, "proxy_used"},
		{"invalid UTF-8 in account", func(l *oplogv1.OperationLog) { l.PlatformAccountId = "shop-\xff" }, "platform_account_id"},
		{"long message", func(l *oplogv1.OperationLog) { l.ErrorMessage = strings.Repeat("x", validate.Message.MaxBytes()+1) }, "error_message"},
		{"long user agent", func(l *oplogv1.OperationLog) { l.UserAgent = strings.Repeat("u", validate.UserAgent.MaxBytes()+1) }, "user_agent"},
		{"long proxy", func(l *oplogv1.OperationLog) { l.ProxyUsed = strings.Repeat("p", validate.Identifier.MaxBytes()+1) }, "proxy_used"},
		{"long resource", func(l *oplogv1.OperationLog) { l.ResourceId = strings.Repeat("r", validate.Identifier.MaxBytes()+1) }, "resource_id"},
		{"negative duration", func(l *oplogv1.OperationLog) { l.ExecutionTimeMs = proto.Int64(-1) }, "execution_time_ms"},
		{"huge duration", func(l *oplogv1.OperationLog) { l.ExecutionTimeMs = proto.Int64(wire.MaxExecutionTimeMs + 1) }, "execution_time_ms"},
		{"negative retries", func(l *oplogv1.OperationLog) { l.RetryCount = -1 }, "retry_count"},
		{"bad trace id", func(l *oplogv1.OperationLog) { l.TraceId = "xyz" }, "trace_id"},
		{"zero trace id", func(l *oplogv1.OperationLog) { l.TraceId = strings.Repeat("0", 32) }, "trace_id"},
		{"span id without trace id", func(l *oplogv1.OperationLog) { l.SpanId = "00f067aa0ba902b7" }, "span_id"},
		{"short span id", func(l *oplogv1.OperationLog) { l.TraceId, l.SpanId = strings.Repeat("a", 32), "00f067aa" }, "span_id"},
		{"zero span id", func(l *oplogv1.OperationLog) { l.TraceId, l.SpanId = strings.Repeat("a", 32), strings.Repeat("0", 16) }, "span_id"},
		{"NUL in payload string", func(l *oplogv1.OperationLog) { l.RequestPayload = str("a\x00b") }, "request_payload"},
		{"NUL in payload key", func(l *oplogv1.OperationLog) {
			l.ResponseSummary = &structpb.Struct{Fields: map[string]*structpb.Value{"k\x00": structpb.NewNullValue()}}
		}, "response_summary"},
		{"NaN in payload", func(l *oplogv1.OperationLog) {
			l.RequestPayload = &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}
		}, "request_payload"},
		{"infinity in a list", func(l *oplogv1.OperationLog) {
			l.RequestPayload = &structpb.Struct{Fields: map[string]*structpb.Value{"l": structpb.NewListValue(&structpb.ListValue{
				Values: []*structpb.Value{structpb.NewNumberValue(1), structpb.NewNumberValue(math.Inf(1))}})}}
		}, "request_payload"},
		{"too deep", func(l *oplogv1.OperationLog) { l.RequestPayload = nested(wire.MaxPayloadDepth + 1) }, "request_payload"},
		{"too big", func(l *oplogv1.OperationLog) { l.RequestPayload = str(strings.Repeat("b", wire.MaxPayloadBytes)) }, "request_payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := goodLog()
			tt.mutate(l)
			_, rej := converter.Convert(marshal(t, l), now)
			require.NotNil(t, rej)
			assert.Equal(t, tt.field, rej.Field)
			assert.NotEmpty(t, rej.Reason)
		})
	}
}

func TestConvertKeepsGoodRows(t *testing.T) {
	t.Parallel()
	l := goodLog()
	l.TraceId, l.SpanId = "4BF92F3577B34DA6A3CE929D0E0E4736", "00F067AA0BA902B7"
	l.ErrorMessage = "line one\nline two\ttabbed — ünïcode"
	l.ExecutionTimeMs = proto.Int64(0)
	l.ErrorCode = proto.Int32(-7)
	l.RequestPayload = nested(wire.MaxPayloadDepth)
	l.CreateTime = timestamppb.New(now.Add(-35*24*time.Hour + time.Second).Add(1234 * time.Nanosecond))
	r, rej := converter.Convert(marshal(t, l), now)
	require.Nil(t, rej)
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", string(r.TraceID))
	assert.Equal(t, "00f067aa0ba902b7", string(r.SpanID))
	assert.Equal(t, l.GetErrorMessage(), string(r.ErrorMessage))
	assert.Equal(t, int64(0), *r.ExecutionTimeMs)
	assert.Equal(t, int32(-7), *r.ErrorCode)
	assert.Equal(t, 1000, r.CreateTime.Nanosecond()%1_000_000/1, "truncated to microseconds as Postgres stores it")
	assert.True(t, json.Valid(r.RequestPayload))
}

func TestPayloadRedactionIsRecursive(t *testing.T) {
	t.Parallel()
	payload, err := structpb.NewStruct(map[string]any{
		"shopId":   "s-1",
		"password": "hunter2",
		"headers": map[string]any{
			"Authorization": "Bearer abc",
			"X-Request-Id":  "r-9",
			"cookies":       []any{"a=1", "b=2"},
		},
		"attempts": []any{
			map[string]any{"API_KEY": "k1", "step": 1.0},
			map[string]any{"api-key": map[string]any{"nested": "k2"}, "step": 2.0},
		},
		"quote": "he said \"hi\"\\ \x01",
	})
	require.NoError(t, err)
	raw, reason := encodePayload(marshal(t, payload), redact.Default())
	require.Empty(t, reason)
	var got map[string]any
	require.NoError(t, json.Unmarshal(raw, &got), string(raw))
	assert.Equal(t, "s-1", got["shopId"])
	assert.Equal(t, redact.Placeholder, got["password"])
	headers := got["headers"].(map[string]any)
	assert.Equal(t, redact.Placeholder, headers["Authorization"])
	assert.Equal(t, redact.Placeholder, headers["cookies"], "a whole array under a sensitive key")
	assert.Equal(t, "r-9", headers["X-Request-Id"])
	attempts := got["attempts"].([]any)
	assert.Equal(t, redact.Placeholder, attempts[0].(map[string]any)["API_KEY"])
	assert.Equal(t, redact.Placeholder, attempts[1].(map[string]any)["api-key"], "a whole object under a sensitive key")
	assert.Equal(t, 2.0, attempts[1].(map[string]any)["step"])
	assert.Equal(t, "he said \"hi\"\\ \x01", got["quote"], "escaping round-trips")
	assert.NotContains(t, string(raw), "hunter2")
	assert.NotContains(t, string(raw), "k2")
}

// corrupt marshals l, then replaces the first occurrence of marker with
// bytes of the same length that Go's protobuf would refuse to send: what a
// hostile or broken client can put on the wire.
func corrupt(t *testing.T, l *oplogv1.OperationLog, marker, with string) []byte {
	t.Helper()
	require.Len(t, with, len(marker))
	b := marshal(t, l)
	i := strings.Index(string(b), marker)
	require.GreaterOrEqual(t, i, 0)
	copy(b[i:], with)
	return b
}

func TestConvertRefusesInvalidUTF8PerRow(t *testing.T) {
	t.Parallel()
	l := goodLog()
	l.ErrorMessage = "message-XX"
	_, rej := converter.Convert(corrupt(t, l, "XX", "\xc3\x28"), now)
	require.NotNil(t, rej)
	assert.Equal(t, Rejection{Field: "error_message", Reason: "must be valid UTF-8"}, *rej)

	l = goodLog()
	l.RequestPayload = &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("v-XX")}}
	_, rej = converter.Convert(corrupt(t, l, "XX", "\xff\xfe"), now)
	require.NotNil(t, rej)
	assert.Equal(t, "request_payload", rej.Field)

	l = goodLog()
	l.RequestPayload = &structpb.Struct{Fields: map[string]*structpb.Value{"key-XX": structpb.NewNullValue()}}
	_, rej = converter.Convert(corrupt(t, l, "XX", "\xff\xfe"), now)
	require.NotNil(t, rej)
	assert.Equal(t, "request_payload", rej.Field)

	l = goodLog()
	l.Id = "XX" + l.Id[2:]
	b := corrupt(t, l, "XX", "\xff\xfe")
	_, rej = converter.Convert(b, now)
	require.NotNil(t, rej)
	assert.Equal(t, "id", rej.Field)
	assert.True(t, utf8.ValidString(RowID(b)), "the id reported back must itself be sendable")
}

func TestConvertRefusesMalformedRows(t *testing.T) {
	t.Parallel()
	good := marshal(t, goodLog())
	for name, b := range map[string][]byte{
		"truncated":       good[:len(good)-3],
		"bad varint":      append(append([]byte{}, good...), 0x20, 0xff),
		"wrong wire type": append(append([]byte{}, good...), 0x0d, 1, 2, 3, 4), // field 1 as fixed32
		"garbage":         []byte{0xff, 0xff, 0xff},
		"bad payload":     append(append([]byte{}, good...), 0x82, 0x01, 0x02, 0x0a, 0xff), // field 16, entry cut short
	} {
		_, rej := converter.Convert(b, now)
		assert.NotNil(t, rej, name)
	}
}

func TestSplitRequest(t *testing.T) {
	t.Parallel()
	req := &oplogv1.IngestRequest{Logs: []*oplogv1.OperationLog{goodLog(), goodLog(), goodLog()}}
	b := marshal(t, req)
	b = protowire.AppendTag(b, 99, protowire.VarintType) // an unknown field is skipped
	b = protowire.AppendVarint(b, 7)
	logs, err := SplitRequest(b)
	require.NoError(t, err)
	require.Len(t, logs, 3)
	for i, l := range logs {
		r, rej := converter.Convert(l, now)
		require.Nil(t, rej)
		assert.Equal(t, req.GetLogs()[i].GetId(), uuid.UUID(r.ID).String())
	}
	_, err = SplitRequest([]byte{0x0a, 0x05, 1})
	assert.ErrorIs(t, err, ErrMalformed)
	logs, err = SplitRequest(nil)
	require.NoError(t, err)
	assert.Empty(t, logs)
}

// FuzzConvert: whatever bytes arrive, Convert neither panics nor accepts
// what it should not: an accepted row has a valid id and payload JSON.
func FuzzConvert(f *testing.F) {
	l := goodLog()
	l.RequestPayload = nested(3)
	l.TraceId = "4bf92f3577b34da6a3ce929d0e0e4736"
	f.Add(marshal(f, l))
	f.Add(marshal(f, goodLog()))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, rej := converter.Convert(b, now)
		_ = RowID(b)
		if rej != nil {
			return
		}
		assert.True(t, r.RequestPayload == nil || json.Valid(r.RequestPayload))
		assert.True(t, utf8.Valid(r.ErrorMessage))
	})
}
