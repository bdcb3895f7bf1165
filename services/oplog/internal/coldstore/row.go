package coldstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"math/bits"
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

// Digest is a content digest of rows: equal for two sets of rows exactly
// when their content is (up to hash collisions), computed the same way
// over the rows in Postgres and over an export's files.
//
// Each row is encoded canonically and unambiguously: its columns in table
// order, each as follows (integers big-endian):
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
//
// How encodings combine depends on the schema version:
//
//   - version 1: SHA-256 over the encodings in (create_time, id) order, so
//     every caller must feed rows in that order;
//   - version 2: the sum, modulo 2^256, of each row's SHA-256 read as a
//     big-endian number. Order does not matter, so Postgres can read the
//     month in the order of its pages (see SchemaVersion), and a row present
//     twice counts twice. It is a check against accidental differences
//     (lost, changed, repeated rows), not a commitment against someone who
//     chooses rows to collide.
type Digest struct {
	version int
	h       hash.Hash
	sum     [4]uint64 // version 2: the running sum, most significant word first
	buf     []byte
	rows    int64
}

// NewDigest returns an empty Digest of a schema version's kind.
func NewDigest(version int) (*Digest, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("coldstore: no digest for schema version %d", version)
	}
	return &Digest{version: version, h: sha256.New(), buf: make([]byte, 0, 1024)}, nil
}

// NeedsSortedRows reports whether the Digest of a schema version must be
// fed rows in (create_time, id) order (version 1's).
func NeedsSortedRows(version int) bool { return version == 1 }

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
	if d.version == 1 {
		d.h.Write(b)
	} else {
		d.addRowHash(sha256.Sum256(b))
	}
	if cap(b) <= 64<<10 {
		d.buf = b // keep the buffer unless one huge row grew it
	}
	d.rows++
}

// addRowHash adds h, a big-endian 256-bit number, to the sum.
func (d *Digest) addRowHash(h [sha256.Size]byte) {
	var carry uint64
	for i := 3; i >= 0; i-- {
		d.sum[i], carry = bits.Add64(d.sum[i], binary.BigEndian.Uint64(h[i*8:]), carry)
	}
}

// Reset empties the digest, to start over.
func (d *Digest) Reset() {
	d.h.Reset()
	d.sum = [4]uint64{}
	d.rows = 0
}

// Rows is the number of rows added.
func (d *Digest) Rows() int64 { return d.rows }

// Version is the schema version whose digest this is.
func (d *Digest) Version() int { return d.version }

// Sum is the digest of the rows added so far, in hex. More rows may be
// added after it.
func (d *Digest) Sum() string {
	if d.version == 1 {
		return hex.EncodeToString(d.h.Sum(nil))
	}
	var out [32]byte
	for i, w := range d.sum {
		binary.BigEndian.PutUint64(out[i*8:], w)
	}
	return hex.EncodeToString(out[:])
}

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
