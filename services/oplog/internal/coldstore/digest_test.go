package coldstore

import (
	"bytes"
	"strings"
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
	const rowHash = "8f1f79cb62808e55360ac1d8047a549cd7267de6ffa96cb060a88977735e9722" // SHA-256 of r's encoding

	v1 := newTestDigest(t, 1)
	assert.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", v1.Sum(), "version 1, no rows: SHA-256 of nothing")
	v1.Add(r)
	assert.Equal(t, int64(1), v1.Rows())
	assert.Equal(t, rowHash, v1.Sum())

	// Version 2 sums the rows' hashes modulo 2^256 (the expected values
	// are 2 × and 3 × rowHash, computed with Python's integers): the
	// carries between words and the wrap-around are pinned too.
	v2 := newTestDigest(t, 2)
	assert.Equal(t, strings.Repeat("0", 64), v2.Sum(), "version 2, no rows: zero")
	v2.Add(r)
	assert.Equal(t, rowHash, v2.Sum())
	v2.Add(r)
	assert.Equal(t, "1e3ef396c5011caa6c1583b008f4a939ae4cfbcdff52d960c15112eee6bd2e44", v2.Sum())
	v2.Add(r)
	assert.Equal(t, "ad5e6d622781aaffa22045880d6efdd6857379b4fefc461121f99c665a1bc566", v2.Sum())
	assert.Equal(t, int64(3), v2.Rows())

	v2.Reset()
	assert.Equal(t, strings.Repeat("0", 64), v2.Sum(), "Reset empties it")
	assert.Zero(t, v2.Rows())
	v1.Reset()
	assert.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", v1.Sum())

	_, err := NewDigest(3)
	assert.Error(t, err, "no digest for a version that does not exist")
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
	sumOf := func(r *Row) string {
		d := newTestDigest(t, SchemaVersion)
		d.Add(r)
		return d.Sum()
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
}

func TestDigestOfASetOfRows(t *testing.T) {
	t.Parallel()
	r1, r2 := oddRow(1, 10), oddRow(2, 10)
	digest := func(version int, rows ...*Row) string {
		d := newTestDigest(t, version)
		for _, r := range rows {
			d.Add(r)
		}
		return d.Sum()
	}
	// Version 1 depends on the order, version 2 does not.
	assert.NotEqual(t, digest(1, r1, r2), digest(1, r2, r1))
	assert.Equal(t, digest(2, r1, r2), digest(2, r2, r1))
	// In version 2 a repeated row counts: a row lost and another doubled
	// does not go unnoticed, and neither do pairs of the same row (as a
	// XOR of hashes would let them).
	assert.NotEqual(t, digest(2, r1, r1, r2), digest(2, r1, r2, r2))
	assert.NotEqual(t, digest(2, r1), digest(2, r1, r2, r2))
	assert.NotEqual(t, digest(2, r1, r2), digest(1, r1, r2), "the versions' digests differ")
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
