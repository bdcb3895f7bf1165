package coldstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"time"
)

// Row is one oplog.operation_logs row, every column; nil pointers and nil
// slices are SQL NULL.
type Row struct {
	ID [16]byte
	// CreateTime has microsecond precision (as timestamptz) and is in UTC.
	// The Exporter refuses a time with a finer part; Read returns UTC.
	CreateTime        time.Time
	UserID            [16]byte
	PlatformAccountID *string
	OperationType     int16
	ResourceID        *string
	Outcome           int16
	ErrorCode         *int32
	ErrorType         *string
	ErrorMessage      *string
	ExecutionTimeMs   *int64
	RetryCount        int32
	AuthTypeDetected  int16
	SessionRefreshed  bool
	ProxyUsed         *string
	UserAgent         *string
	// RequestPayload and ResponseSummary are JSON text exactly as Postgres
	// renders jsonb::text; nil is NULL (a non-nil empty slice is kept as an
	// empty, non-NULL value).
	RequestPayload  []byte
	ResponseSummary []byte
	TraceID         *string
	SpanID          *string
}

// compareKey compares (t1, id1) with (t2, id2) in the export order
// (create_time, id), times in Unix microseconds; ids compare as Postgres
// compares uuids, bytewise.
func compareKey(t1 int64, id1 [16]byte, t2 int64, id2 [16]byte) int {
	switch {
	case t1 < t2:
		return -1
	case t1 > t2:
		return 1
	}
	return bytes.Compare(id1[:], id2[:])
}

// Digest is an order-dependent content digest of rows: SHA-256 over a
// canonical, unambiguous binary encoding of each row, fed in (create_time,
// id) order by every caller, so that a digest computed from Postgres and
// one computed from an export are equal exactly when the content is.
//
// The encoding of a row is its columns in table order, each as follows
// (integers big-endian):
//
//	uuid                  16 bytes
//	timestamptz           int64, Unix microseconds
//	smallint/int/bigint   2/4/8 bytes, two's complement
//	boolean               1 byte, 0 or 1
//	text, jsonb           uint64 length, then the bytes (jsonb: its text)
//
// A nullable column is preceded by a marker byte, 0 for NULL (and nothing
// follows) or 1 (and the value follows). NOT NULL columns have no marker.
// SCHEMA.md lists the columns.
type Digest struct {
	h    hash.Hash
	buf  []byte
	rows int64
}

// NewDigest returns an empty Digest.
func NewDigest() *Digest {
	return &Digest{h: sha256.New(), buf: make([]byte, 0, 1024)}
}

// Add feeds r into the digest.
func (d *Digest) Add(r *Row) {
	b := d.buf[:0]
	b = append(b, r.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.CreateTime.UnixMicro()))
	b = append(b, r.UserID[:]...)
	b = appendText(b, r.PlatformAccountID)
	b = binary.BigEndian.AppendUint16(b, uint16(r.OperationType))
	b = appendText(b, r.ResourceID)
	b = binary.BigEndian.AppendUint16(b, uint16(r.Outcome))
	if r.ErrorCode == nil {
		b = append(b, 0)
	} else {
		b = binary.BigEndian.AppendUint32(append(b, 1), uint32(*r.ErrorCode))
	}
	b = appendText(b, r.ErrorType)
	b = appendText(b, r.ErrorMessage)
	if r.ExecutionTimeMs == nil {
		b = append(b, 0)
	} else {
		b = binary.BigEndian.AppendUint64(append(b, 1), uint64(*r.ExecutionTimeMs))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(r.RetryCount))
	b = binary.BigEndian.AppendUint16(b, uint16(r.AuthTypeDetected))
	if r.SessionRefreshed {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendText(b, r.ProxyUsed)
	b = appendText(b, r.UserAgent)
	b = appendBytes(b, r.RequestPayload)
	b = appendBytes(b, r.ResponseSummary)
	b = appendText(b, r.TraceID)
	b = appendText(b, r.SpanID)
	d.h.Write(b)
	if cap(b) <= 64<<10 {
		d.buf = b // keep the buffer unless one huge row grew it
	}
	d.rows++
}

// Rows is the number of rows added.
func (d *Digest) Rows() int64 { return d.rows }

// Sum is the digest of the rows added so far, in hex. More rows may be
// added after it.
func (d *Digest) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

func appendText(b []byte, s *string) []byte {
	if s == nil {
		return append(b, 0)
	}
	b = binary.BigEndian.AppendUint64(append(b, 1), uint64(len(*s)))
	return append(b, *s...)
}

func appendBytes(b []byte, p []byte) []byte {
	if p == nil {
		return append(b, 0)
	}
	b = binary.BigEndian.AppendUint64(append(b, 1), uint64(len(p)))
	return append(b, p...)
}
