package coldstore

import (
	"fmt"
	"strings"
	"time"
	"unsafe"

	"github.com/parquet-go/parquet-go"
)

// SchemaVersion is the version of the export format that exports are
// written in: the Parquet schema below, the row order, the manifest and
// the Digest. Readers refuse versions they do not know. Bump it (and keep
// reading the old ones) on any change.
//
//   - Version 1: rows sorted by (create_time, id); an order-dependent
//     Digest. Reading a month sorted took a sort per day and a query
//     that stayed open while the (rate-limited) export consumed its rows:
//     a snapshot held for seconds at a time, which kept Postgres from
//     pruning the roll-up rows ingest updates all the time.
//   - Version 2: rows in the order of the month's pages, read a few MiB at
//     a time, each chunk fetched whole in milliseconds; an
//     order-independent Digest. For an append-only log that order is
//     close to create_time's. The Parquet schema and the manifest are
//     version 1's.
const SchemaVersion = 2

// parquetRow declares the Parquet schema of schema versions 1 and 2; columns are
// in table order. It is used only to derive the schema (rows are written
// and read as parquet.Row values, without reflection). Keep SCHEMA.md and
// the expected schema in the tests in step with it.
//
//	message operation_logs {
//		required fixed_len_byte_array(16) id (UUID);
//		required int64 create_time (TIMESTAMP(isAdjustedToUTC=true,unit=MICROS));
//		required fixed_len_byte_array(16) user_id (UUID);
//		optional binary platform_account_id (STRING);
//		required int32 operation_type (INT(16,true));
//		optional binary resource_id (STRING);
//		required int32 outcome (INT(16,true));
//		optional int32 error_code (INT(32,true));
//		optional binary error_type (STRING);
//		optional binary error_message (STRING);
//		optional int64 execution_time_ms (INT(64,true));
//		required int32 retry_count (INT(32,true));
//		required int32 auth_type_detected (INT(16,true));
//		required boolean session_refreshed;
//		optional binary proxy_used (STRING);
//		optional binary user_agent (STRING);
//		optional binary request_payload (JSON);
//		optional binary response_summary (JSON);
//		optional binary trace_id (STRING);
//		optional binary span_id (STRING);
//	}
type parquetRow struct {
	ID                [16]byte `parquet:"id,uuid"`
	CreateTime        int64    `parquet:"create_time,timestamp(microsecond:utc),delta"`
	UserID            [16]byte `parquet:"user_id,uuid,dict"`
	PlatformAccountID *string  `parquet:"platform_account_id,optional,dict"`
	OperationType     int16    `parquet:"operation_type,int(16),dict"`
	ResourceID        *string  `parquet:"resource_id,optional"`
	Outcome           int16    `parquet:"outcome,int(16),dict"`
	ErrorCode         *int32   `parquet:"error_code,optional,int(32),dict"`
	ErrorType         *string  `parquet:"error_type,optional,dict"`
	ErrorMessage      *string  `parquet:"error_message,optional"`
	ExecutionTimeMs   *int64   `parquet:"execution_time_ms,optional,int(64)"`
	RetryCount        int32    `parquet:"retry_count,int(32),dict"`
	AuthTypeDetected  int16    `parquet:"auth_type_detected,int(16),dict"`
	SessionRefreshed  bool     `parquet:"session_refreshed"`
	ProxyUsed         *string  `parquet:"proxy_used,optional,dict"`
	UserAgent         *string  `parquet:"user_agent,optional,dict"`
	RequestPayload    *string  `parquet:"request_payload,optional,json"`
	ResponseSummary   *string  `parquet:"response_summary,optional,json"`
	TraceID           *string  `parquet:"trace_id,optional"`
	SpanID            *string  `parquet:"span_id,optional"`
}

// Column indexes in parquet.Row values.
const (
	colID = iota
	colCreateTime
	colUserID
	colPlatformAccountID
	colOperationType
	colResourceID
	colOutcome
	colErrorCode
	colErrorType
	colErrorMessage
	colExecutionTimeMs
	colRetryCount
	colAuthTypeDetected
	colSessionRefreshed
	colProxyUsed
	colUserAgent
	colRequestPayload
	colResponseSummary
	colTraceID
	colSpanID
	numColumns
)

var columnNames = [numColumns]string{
	"id", "create_time", "user_id", "platform_account_id", "operation_type",
	"resource_id", "outcome", "error_code", "error_type", "error_message",
	"execution_time_ms", "retry_count", "auth_type_detected",
	"session_refreshed", "proxy_used", "user_agent", "request_payload",
	"response_summary", "trace_id", "span_id",
}

// schema is the Parquet schema of SchemaVersion.
var schema = func() *parquet.Schema {
	s := parquet.NewSchema("operation_logs", parquet.SchemaOf(parquetRow{}))
	if err := checkColumns(s); err != nil {
		panic("coldstore: " + err.Error())
	}
	return s
}()

// schemaSignature describes s's columns: name, repetition, physical and
// logical type, in order. Encodings and compression are not part of it.
func schemaSignature(s *parquet.Schema) string {
	var b strings.Builder
	for _, f := range s.Fields() {
		rep := "required"
		switch {
		case f.Repeated():
			rep = "repeated"
		case f.Optional():
			rep = "optional"
		}
		if !f.Leaf() {
			fmt.Fprintf(&b, "%s group %s;", rep, f.Name())
			continue
		}
		t := f.Type()
		logical := ""
		if lt := t.LogicalType(); lt != nil {
			logical = lt.String()
		}
		fmt.Fprintf(&b, "%s %s(%d) %s %s;", rep, t.Kind(), t.Length(), f.Name(), logical)
	}
	return b.String()
}

var wantSignature = schemaSignature(schema)

func checkColumns(s *parquet.Schema) error {
	fields := s.Fields()
	if len(fields) != numColumns {
		return fmt.Errorf("schema has %d columns, want %d", len(fields), numColumns)
	}
	for i, f := range fields {
		if f.Name() != columnNames[i] || !f.Leaf() {
			return fmt.Errorf("column %d is %q, want %q", i, f.Name(), columnNames[i])
		}
	}
	return nil
}

// appendRow appends r's values to row (a parquet.Row of the schema) and
// returns it. Byte values alias r's strings and slices: the parquet writer
// copies them before WriteRows returns.
func appendRow(row parquet.Row, r *Row) parquet.Row {
	row = append(row,
		parquet.FixedLenByteArrayValue(r.ID[:]).Level(0, 0, colID),
		parquet.Int64Value(r.CreateTime.UnixMicro()).Level(0, 0, colCreateTime),
		parquet.FixedLenByteArrayValue(r.UserID[:]).Level(0, 0, colUserID),
		optText(r.PlatformAccountID, colPlatformAccountID),
		parquet.Int32Value(int32(r.OperationType)).Level(0, 0, colOperationType),
		optText(r.ResourceID, colResourceID),
		parquet.Int32Value(int32(r.Outcome)).Level(0, 0, colOutcome),
	)
	if r.ErrorCode == nil {
		row = append(row, parquet.NullValue().Level(0, 0, colErrorCode))
	} else {
		row = append(row, parquet.Int32Value(*r.ErrorCode).Level(0, 1, colErrorCode))
	}
	row = append(row,
		optText(r.ErrorType, colErrorType),
		optText(r.ErrorMessage, colErrorMessage),
	)
	if r.ExecutionTimeMs == nil {
		row = append(row, parquet.NullValue().Level(0, 0, colExecutionTimeMs))
	} else {
		row = append(row, parquet.Int64Value(*r.ExecutionTimeMs).Level(0, 1, colExecutionTimeMs))
	}
	return append(row,
		parquet.Int32Value(r.RetryCount).Level(0, 0, colRetryCount),
		parquet.Int32Value(int32(r.AuthTypeDetected)).Level(0, 0, colAuthTypeDetected),
		parquet.BooleanValue(r.SessionRefreshed).Level(0, 0, colSessionRefreshed),
		optText(r.ProxyUsed, colProxyUsed),
		optText(r.UserAgent, colUserAgent),
		optBytes(r.RequestPayload, colRequestPayload),
		optBytes(r.ResponseSummary, colResponseSummary),
		optText(r.TraceID, colTraceID),
		optText(r.SpanID, colSpanID),
	)
}

func optText(s *string, col int) parquet.Value {
	if s == nil {
		return parquet.NullValue().Level(0, 0, col)
	}
	// No copy of the string: the writer copies byte values into its
	// column buffers and never writes to them (strings are immutable).
	return parquet.ByteArrayValue(unsafe.Slice(unsafe.StringData(*s), len(*s))).Level(0, 1, col)
}

func optBytes(p []byte, col int) parquet.Value {
	if p == nil {
		return parquet.NullValue().Level(0, 0, col)
	}
	return parquet.ByteArrayValue(p).Level(0, 1, col)
}

// decodeRow converts a parquet.Row of the schema into a new Row, copying
// every byte value (the reader reuses its buffers).
func decodeRow(row parquet.Row) (*Row, error) {
	if len(row) != numColumns {
		return nil, fmt.Errorf("row has %d values, want %d", len(row), numColumns)
	}
	for i, v := range row {
		if v.Column() != i {
			return nil, fmt.Errorf("value %d is of column %d", i, v.Column())
		}
		if v.RepetitionLevel() != 0 {
			return nil, fmt.Errorf("column %s is repeated", columnNames[i])
		}
	}
	var r Row
	if err := uuidOf(row[colID], &r.ID); err != nil {
		return nil, err
	}
	if row[colCreateTime].IsNull() {
		return nil, fmt.Errorf("create_time is NULL")
	}
	r.CreateTime = time.UnixMicro(row[colCreateTime].Int64()).UTC()
	if err := uuidOf(row[colUserID], &r.UserID); err != nil {
		return nil, err
	}
	r.PlatformAccountID = textOf(row[colPlatformAccountID])
	r.OperationType = int16(row[colOperationType].Int32())
	r.ResourceID = textOf(row[colResourceID])
	r.Outcome = int16(row[colOutcome].Int32())
	if v := row[colErrorCode]; !v.IsNull() {
		c := v.Int32()
		r.ErrorCode = &c
	}
	r.ErrorType = textOf(row[colErrorType])
	r.ErrorMessage = textOf(row[colErrorMessage])
	if v := row[colExecutionTimeMs]; !v.IsNull() {
		ms := v.Int64()
		r.ExecutionTimeMs = &ms
	}
	r.RetryCount = row[colRetryCount].Int32()
	r.AuthTypeDetected = int16(row[colAuthTypeDetected].Int32())
	r.SessionRefreshed = row[colSessionRefreshed].Boolean()
	r.ProxyUsed = textOf(row[colProxyUsed])
	r.UserAgent = textOf(row[colUserAgent])
	r.RequestPayload = bytesOf(row[colRequestPayload])
	r.ResponseSummary = bytesOf(row[colResponseSummary])
	r.TraceID = textOf(row[colTraceID])
	r.SpanID = textOf(row[colSpanID])
	return &r, nil
}

func uuidOf(v parquet.Value, dst *[16]byte) error {
	b := v.ByteArray()
	if v.IsNull() || len(b) != 16 {
		return fmt.Errorf("uuid column %s has %d bytes", columnNames[v.Column()], len(b))
	}
	copy(dst[:], b)
	return nil
}

func textOf(v parquet.Value) *string {
	if v.IsNull() {
		return nil
	}
	s := string(v.ByteArray())
	return &s
}

func bytesOf(v parquet.Value) []byte {
	if v.IsNull() {
		return nil
	}
	return append([]byte{}, v.ByteArray()...)
}
