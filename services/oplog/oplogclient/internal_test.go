package oplogclient

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/redact"
)

// idleClient is a client whose flushes never get anywhere, for tests and
// benchmarks of Log itself.
func idleClient(t testing.TB, opts ...Option) *Client {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	c, err := New(conn, append([]Option{WithLinger(time.Hour), WithFlushSize(1000)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
		_ = conn.Close()
	})
	return c
}

func TestIDsAreVersion7AndIncreasing(t *testing.T) {
	t.Parallel()
	c := idleClient(t)
	at := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var prev [16]byte
	var now time.Time
	for i := 0; i < 10000; i++ {
		now = at
		if i%1000 == 999 {
			at = at.Add(time.Millisecond)
		}
		c.mu.Lock()
		id := c.newID(now)
		c.mu.Unlock()
		u := uuid.UUID(id)
		require.Equal(t, uuid.Version(7), u.Version())
		require.Equal(t, uuid.RFC4122, u.Variant())
		require.Positive(t, bytes.Compare(id[:], prev[:]), "ids of one client increase")
		prev = id
	}
	got := uuid.UUID(prev)
	assert.Equal(t, uuid.Version(7), got.Version())
	ms := int64(got[0])<<40 | int64(got[1])<<32 | int64(got[2])<<24 | int64(got[3])<<16 | int64(got[4])<<8 | int64(got[5])
	assert.Equal(t, now.UnixMilli(), ms, "the first 48 bits are the Unix millisecond")
}

// The SDK sanitises each text field by the rule of its kind, the rule
// every service checks, so what it sends is accepted everywhere.
func TestTextFieldsSanitisedByTheirKind(t *testing.T) {
	t.Parallel()
	r := record{at: time.Now(), entry: Entry{
		PlatformAccountID: "\u00a0shop-1 ",
		ResourceID:        "line\nbreak",
		ErrorType:         strings.Repeat("E", 70),
		ErrorMessage:      "line\nbreak\x00",
		ProxyUsed:         "proxy\xff",
		UserAgent:         strings.Repeat("가", 200),
	}}
	var got oplogv1.OperationLog
	require.NoError(t, proto.Unmarshal(appendLog(nil, &r), &got))
	assert.Equal(t, "shop-1", got.GetPlatformAccountId())
	assert.Equal(t, "line\uFFFDbreak", got.GetResourceId())
	assert.Equal(t, strings.Repeat("E", 64), got.GetErrorType())
	assert.Equal(t, "line\nbreak\uFFFD", got.GetErrorMessage())
	assert.Equal(t, "proxy\uFFFD", got.GetProxyUsed())
	assert.Equal(t, strings.Repeat("가", 170), got.GetUserAgent(), "cut to 512 bytes on a rune boundary")
	for field, p := range map[string]string{
		"platform_account_id": validate.Identifier.Problem(got.GetPlatformAccountId()),
		"resource_id":         validate.Identifier.Problem(got.GetResourceId()),
		"error_type":          validate.Code.Problem(got.GetErrorType()),
		"error_message":       validate.Message.Problem(got.GetErrorMessage()),
		"proxy_used":          validate.Identifier.Problem(got.GetProxyUsed()),
		"user_agent":          validate.UserAgent.Problem(got.GetUserAgent()),
	} {
		assert.Empty(t, p, field)
	}
}

func TestPayloadStruct(t *testing.T) {
	t.Parallel()
	type custom struct{ A int }
	deep := map[string]any{}
	cur := deep
	for i := 0; i < 30; i++ {
		next := map[string]any{}
		cur["d"] = next
		cur = next
	}
	s := decodeStruct(t, encodePayload(map[string]any{
		"token":    "abc",
		"list":     []any{map[string]any{"Api-Key": "k"}, 1, nil, true},
		"nan":      math.NaN(),
		"when":     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"took":     1500 * time.Millisecond,
		"strs":     []string{"a", "b"},
		"headers":  map[string]string{"Cookie": "c=1", "Accept": "x"},
		"custom":   custom{A: 1},
		"deep":     deep,
		"bad utf8": "\xff",
	}, redact.Default()))
	assert.Equal(t, redact.Placeholder, s["token"])
	assert.Equal(t, []any{map[string]any{"Api-Key": redact.Placeholder}, 1.0, nil, true}, s["list"])
	assert.Equal(t, "NaN", s["nan"], "non-finite numbers travel as text")
	assert.Equal(t, "2026-01-02T03:04:05Z", s["when"])
	assert.Equal(t, "1.5s", s["took"])
	assert.Equal(t, []any{"a", "b"}, s["strs"])
	assert.Equal(t, map[string]any{"Cookie": redact.Placeholder, "Accept": "x"}, s["headers"])
	assert.Equal(t, "{1}", s["custom"])
	assert.Equal(t, "\uFFFD", s["bad utf8"])
	depth := 0
	for v := s["deep"]; ; depth++ {
		m, ok := v.(map[string]any)
		if !ok {
			assert.Equal(t, "[too deep]", v)
			break
		}
		v = m["d"]
	}
	assert.Less(t, depth, 16, "cut below the server's depth limit")

	big := decodeStruct(t, encodePayload(map[string]any{"blob": strings.Repeat("x", 20000)}, redact.Default()))
	assert.Equal(t, true, big["truncated"], "too large for the server: replaced, not rejected")

	empty := encodePayload(map[string]any{}, redact.Default())
	assert.NotNil(t, empty, "an empty payload is an empty object, not none")
	assert.Empty(t, decodeStruct(t, empty))
}

// decodeStruct reads SDK-encoded Struct bytes back with the standard
// protobuf library: what any server would see.
func decodeStruct(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var s structpb.Struct
	require.NoError(t, proto.Unmarshal(b, &s))
	return s.AsMap()
}

// The hand-written row encoding decodes, with the standard library, into
// the OperationLog it stands for.
func TestAppendLogIsStandardProtobuf(t *testing.T) {
	t.Parallel()
	code := int32(-3)
	r := record{
		id: [16]byte{0x01, 0x93, 0xa0, 0xc2, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0xaa},
		span: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{0x4b, 0xf9}, SpanID: trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		}),
		at: time.Date(2026, 11, 21, 12, 0, 0, 123456789, time.UTC),
		entry: Entry{
			UserID: "0193a0c2-0000-7000-8000-0000000000bb", PlatformAccountID: "acct\n1", OperationType: oplogv1.OperationType_OPERATION_TYPE_ADD_REPLY,
			ResourceID: "r", Outcome: commonv1.Outcome_OUTCOME_FAILED, ErrorCode: &code, ErrorType: "TIMEOUT", ErrorMessage: "m",
			ExecutionTime: 1500 * time.Millisecond, RetryCount: 3, AuthTypeDetected: commonv1.AuthType_AUTH_TYPE_NORMAL,
			SessionRefreshed: true, ProxyUsed: "p", UserAgent: "ua",
		},
		request:  encodePayload(map[string]any{"a": 1}, redact.Default()),
		response: encodePayload(map[string]any{"status": "ok"}, redact.Default()),
	}
	var got oplogv1.OperationLog
	require.NoError(t, proto.Unmarshal(appendLog(nil, &r), &got))
	want := &oplogv1.OperationLog{
		Id: "0193a0c2-0000-7000-8000-0000000000aa", UserId: "0193a0c2-0000-7000-8000-0000000000bb", PlatformAccountId: "acct\uFFFD1",
		OperationType: oplogv1.OperationType_OPERATION_TYPE_ADD_REPLY, ResourceId: "r", Outcome: commonv1.Outcome_OUTCOME_FAILED,
		ErrorCode: &code, ErrorType: "TIMEOUT", ErrorMessage: "m", ExecutionTimeMs: proto.Int64(1500), RetryCount: 3,
		AuthTypeDetected: commonv1.AuthType_AUTH_TYPE_NORMAL, SessionRefreshed: true, ProxyUsed: "p", UserAgent: "ua",
		RequestPayload:  &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewNumberValue(1)}},
		ResponseSummary: &structpb.Struct{Fields: map[string]*structpb.Value{"status": structpb.NewStringValue("ok")}},
		TraceId:         "4bf90000000000000000000000000000",
		SpanId:          "00f067aa0ba902b7",
		CreateTime:      timestamppb.New(r.at),
	}
	assert.True(t, proto.Equal(want, &got), "got %v", &got)

	// The encoder writes field numbers by hand: every field of the
	// contract must be among them, or a field added to the proto would
	// silently never be sent.
	fields := got.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		assert.True(t, got.ProtoReflect().Has(fd), "OperationLog.%s (field %d) is not sent by appendLog", fd.Name(), fd.Number())
	}
}

func BenchmarkLog(b *testing.B) {
	c := idleClient(b, WithBufferSize(1<<16))
	ctx := context.Background()
	e := Entry{
		UserID:        "0193a0c2-0000-7000-8000-0000000000aa",
		OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
		Outcome:       commonv1.Outcome_OUTCOME_FAILED,
		ErrorType:     "TIMEOUT",
		ExecutionTime: 350 * time.Millisecond,
		ProxyUsed:     "proxy-eu-3",
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Log(ctx, e)
	}
}

func BenchmarkLogWithPayload(b *testing.B) {
	c := idleClient(b, WithBufferSize(1<<16))
	ctx := context.Background()
	e := Entry{
		UserID:          "0193a0c2-0000-7000-8000-0000000000aa",
		OperationType:   oplogv1.OperationType_OPERATION_TYPE_ADD_REPLY,
		Outcome:         commonv1.Outcome_OUTCOME_SUCCESS,
		RequestPayload:  map[string]any{"reviewId": "r-1", "text": "Thank you!", "password": "x"},
		ResponseSummary: map[string]any{"status": 200},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Log(ctx, e)
	}
}
