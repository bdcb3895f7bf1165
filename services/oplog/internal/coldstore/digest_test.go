package coldstore

import (
	"bytes"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/stretchr/testify/assert"
)

func openParquetBytes(data []byte) (*parquet.File, error) {
	return parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
}

func TestDigestIsPinned(t *testing.T) {
	t.Parallel()
	// The digest is stored in manifests and compared with digests computed
	// from Postgres: its encoding must not change within a schema version.
	// The expected value was computed independently from the encoding as
	// SCHEMA.md documents it (a few lines of Python's struct and hashlib).
	r := &Row{
		ID:                [16]byte{0x01, 0x98, 0xc3, 0xa2, 0x7f, 0x6e, 0x7c, 0x4b, 0x9d, 0x3e, 0x2a, 0x1b, 0x0c, 0x9d, 0x8e, 0x7f},
		CreateTime:        time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC),
		UserID:            [16]byte{15: 1},
		PlatformAccountID: ptr("acct-1"),
		OperationType:     3,
		Outcome:           2,
		ErrorCode:         ptr(int32(-1)),
		ErrorMessage:      ptr(""),
		ExecutionTimeMs:   ptr(int64(1234)),
		RetryCount:        2,
		AuthTypeDetected:  1,
		SessionRefreshed:  true,
		RequestPayload:    []byte(`{"a": 1}`),
		TraceID:           ptr("4bf92f3577b34da6a3ce929d0e0e4736"),
		SpanID:            ptr("00f067aa0ba902b7"),
	}
	d := NewDigest()
	assert.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", d.Sum(), "no rows: SHA-256 of nothing")
	d.Add(r)
	assert.Equal(t, int64(1), d.Rows())
	assert.Equal(t, "8f1f79cb62808e55360ac1d8047a549cd7267de6ffa96cb060a88977735e9722", d.Sum())
}

func TestDigestDistinguishes(t *testing.T) {
	t.Parallel()
	base := func() *Row { return oddRow(4095, 8192) } // every nullable column set
	variants := map[string]func(r *Row){
		"empty string vs NULL":       func(r *Row) { r.ErrorType = ptr("") },
		"NULL text":                  func(r *Row) { r.ErrorType = nil },
		"empty payload vs NULL":      func(r *Row) { r.RequestPayload = nil },
		"JSON null vs NULL":          func(r *Row) { r.ResponseSummary = []byte("null") },
		"bytes moved between fields": func(r *Row) { *r.ErrorType += "x"; *r.ErrorMessage = (*r.ErrorMessage)[:0] },
		"microsecond":                func(r *Row) { r.CreateTime = r.CreateTime.Add(time.Microsecond) },
		"id":                         func(r *Row) { r.ID[15]++ },
		"user":                       func(r *Row) { r.UserID[0]++ },
		"bool":                       func(r *Row) { r.SessionRefreshed = !r.SessionRefreshed },
		"zero error code vs NULL":    func(r *Row) { r.ErrorCode = nil },
		"retry count":                func(r *Row) { r.RetryCount++ },
		"auth type":                  func(r *Row) { r.AuthTypeDetected++ },
		"operation type":             func(r *Row) { r.OperationType++ },
		"outcome":                    func(r *Row) { r.Outcome++ },
		"execution time":             func(r *Row) { *r.ExecutionTimeMs++ },
		"trace":                      func(r *Row) { r.TraceID = nil },
		"span":                       func(r *Row) { r.SpanID = nil },
		"trace and span swapped":     func(r *Row) { r.TraceID, r.SpanID = r.SpanID, r.TraceID },
	}
	b := base()
	b.ErrorType, b.ErrorMessage, b.ErrorCode, b.ResponseSummary = ptr("ab"), ptr("c"), ptr(int32(0)), []byte(`{}`)
	want := sumOf(b)
	seen := map[string]string{want: "base"}
	for name, change := range variants {
		r := base()
		r.ErrorType, r.ErrorMessage, r.ErrorCode, r.ResponseSummary = ptr("ab"), ptr("c"), ptr(int32(0)), []byte(`{}`)
		change(r)
		s := sumOf(r)
		if other, dup := seen[s]; dup {
			t.Errorf("%s digests like %s", name, other)
		}
		seen[s] = name
	}
	// Order matters.
	r1, r2 := oddRow(1, 10), oddRow(2, 10)
	d1, d2 := NewDigest(), NewDigest()
	d1.Add(r1)
	d1.Add(r2)
	d2.Add(r2)
	d2.Add(r1)
	assert.NotEqual(t, d1.Sum(), d2.Sum())
}

func sumOf(r *Row) string {
	d := NewDigest()
	d.Add(r)
	return d.Sum()
}

func TestSchemaIsDocumented(t *testing.T) {
	t.Parallel()
	// doc comment of parquetRow and SCHEMA.md show this schema.
	want := `message operation_logs {
	required fixed_len_byte_array(16) id (UUID);
	required int64 create_time (TIMESTAMP(isAdjustedToUTC=true,unit=MICROS));
	required fixed_len_byte_array(16) user_id (UUID);
	optional binary platform_account_id (STRING);
	required int32 operation_type (INT(16,true));
	optional binary resource_id (STRING);
	required int32 outcome (INT(16,true));
	optional int32 error_code (INT(32,true));
	optional binary error_type (STRING);
	optional binary error_message (STRING);
	optional int64 execution_time_ms (INT(64,true));
	required int32 retry_count (INT(32,true));
	required int32 auth_type_detected (INT(16,true));
	required boolean session_refreshed;
	optional binary proxy_used (STRING);
	optional binary user_agent (STRING);
	optional binary request_payload (JSON);
	optional binary response_summary (JSON);
	optional binary trace_id (STRING);
	optional binary span_id (STRING);
}`
	assert.Equal(t, want, schema.String())
}
