package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// copyRows writes rows into table with COPY ... FROM STDIN (FORMAT
// binary), encoding the fixed columns directly. pgx's generic CopyFrom
// boxes every value in an interface and plans its encoding per value; on
// the ingest path that was a seventh of the server's CPU.
func copyRows(ctx context.Context, tx pgx.Tx, table string, rows []*Row) (int64, error) {
	// The raw protocol call bypasses pgx's tracer; the span otelpgx would
	// have made is made here.
	ctx, span := tracer.Start(ctx, "copy_from "+table, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.Int("db.rows", len(rows))))
	defer span.End()
	var buf bytes.Buffer
	buf.Grow(19 + len(rows)*320)
	buf.WriteString("PGCOPY\n\xff\r\n\x00")
	buf.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0}) // flags, header extension length
	e := copyEncoder{&buf}
	for _, r := range rows {
		e.int16(int16(len(columns)))
		e.bytes(r.ID[:])
		e.timestamptz(r.CreateTime.UnixMicro())
		e.bytes(r.UserID[:])
		e.text(r.PlatformAccountID)
		e.smallint(r.OperationType)
		e.text(r.ResourceID)
		e.smallint(r.Outcome)
		if r.ErrorCode != nil {
			e.integer(*r.ErrorCode)
		} else {
			e.null()
		}
		e.text(r.ErrorType)
		e.text(r.ErrorMessage)
		if r.ExecutionTimeMs != nil {
			e.bigint(*r.ExecutionTimeMs)
		} else {
			e.null()
		}
		e.integer(r.RetryCount)
		e.smallint(r.AuthTypeDetected)
		e.boolean(r.SessionRefreshed)
		e.text(r.ProxyUsed)
		e.text(r.UserAgent)
		e.jsonb(r.RequestPayload)
		e.jsonb(r.ResponseSummary)
		e.text(r.TraceID)
		e.text(r.SpanID)
	}
	e.int16(-1) // trailer
	sql := "COPY " + table + " (" + strings.Join(columns, ", ") + ") FROM STDIN (FORMAT binary)"
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, &buf, sql)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "copy failed")
	}
	return tag.RowsAffected(), err
}

var tracer = otel.Tracer("github.com/platforma/platforma/services/oplog/internal/store")

// columns is the COPY column list, in copyRows' order.
var columns = []string{
	"id", "create_time", "user_id", "platform_account_id", "operation_type", "resource_id", "outcome",
	"error_code", "error_type", "error_message", "execution_time_ms", "retry_count", "auth_type_detected",
	"session_refreshed", "proxy_used", "user_agent", "request_payload", "response_summary", "trace_id",
	"span_id",
}

// copyEncoder writes fields in Postgres's binary COPY format: a 32-bit
// length (-1 for NULL), then the value in the type's binary send format.
type copyEncoder struct{ b *bytes.Buffer }

// postgresEpochMicros is 2000-01-01 UTC, where binary timestamps count from.
const postgresEpochMicros = 946684800 * 1000000

func (e copyEncoder) int16(v int16) {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], uint16(v))
	e.b.Write(b[:])
}

func (e copyEncoder) length(n int) {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(int32(n)))
	e.b.Write(l[:])
}

func (e copyEncoder) null() { e.length(-1) }

func (e copyEncoder) bytes(v []byte) {
	e.length(len(v))
	e.b.Write(v)
}

// text stores an empty value as NULL, like the rest of the schema expects.
func (e copyEncoder) text(s []byte) {
	if len(s) == 0 {
		e.null()
		return
	}
	e.length(len(s))
	e.b.Write(s)
}

func (e copyEncoder) smallint(v int16) {
	e.length(2)
	e.int16(v)
}

func (e copyEncoder) integer(v int32) {
	e.length(4)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	e.b.Write(b[:])
}

func (e copyEncoder) bigint(v int64) {
	e.length(8)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	e.b.Write(b[:])
}

func (e copyEncoder) timestamptz(unixMicros int64) { e.bigint(unixMicros - postgresEpochMicros) }

func (e copyEncoder) boolean(v bool) {
	e.length(1)
	if v {
		e.b.WriteByte(1)
	} else {
		e.b.WriteByte(0)
	}
}

// jsonb's binary format is a version byte (1) and the JSON text.
func (e copyEncoder) jsonb(doc []byte) {
	if doc == nil {
		e.null()
		return
	}
	e.length(1 + len(doc))
	e.b.WriteByte(1)
	e.b.Write(doc)
}
