package coldstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/parquet-go/parquet-go"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// readBatch is the number of rows decoded at a time.
const readBatch = 1024

// Read streams export exportID of month back, calling fn for each row in
// the export's order (for schema version 1, (create_time, id)); fn may
// keep the Row. It reads every schema version up to SchemaVersion. It
// checks the export against its manifest as it goes: each file's size and
// SHA-256 before any of its rows are decoded, its row count, the rows'
// month (and, for version 1, their order), and at the end the row count,
// min and max create_time and the Digest of all rows. The manifest must
// be sane as Verify describes.
//
// Each file is first copied to a temporary file (in os.TempDir) while its
// checksum is computed, so memory stays bounded by a row group's pages;
// the temporary file is removed when the file has been read.
//
// Errors that mean the export is bad wrap ErrCorrupt and name the file and
// what differs; an export without a manifest gives ErrNotFound; an error
// from fn is returned as is. fn may have been called for some rows before
// a later check fails (the digest can only be checked at the end), so a
// restore must be undone unless Read returns nil: load the rows in a
// transaction and commit only then.
func Read(ctx context.Context, b *blob.Bucket, month time.Time, exportID string, fn func(*Row) error) (Manifest, error) {
	m, err := ReadManifest(ctx, b, month, exportID)
	if err != nil {
		return Manifest{}, err
	}
	if err := checkManifest(&m, month, exportID); err != nil {
		return Manifest{}, err
	}
	digest, err := NewDigest(m.SchemaVersion)
	if err != nil {
		return Manifest{}, err
	}
	rd := &reader{
		ctx:    ctx,
		b:      b,
		prefix: exportPrefix(month, exportID),
		m:      &m,
		fn:     fn,
		digest: digest,
	}
	rd.start, rd.end = monthBounds(month)
	for _, f := range m.Files {
		if err := rd.readFile(f); err != nil {
			return Manifest{}, err
		}
	}
	if err := rd.finish(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Verify reads an export completely without using its rows: Read with a
// no-op fn. The manifest must be sane (as for Read): a schema version this
// build knows, the month and export id asked for, file names and row
// counts that add up, min and max create_time within the month; then every
// file must match its size, SHA-256 and row count, and the rows their
// month (and, for version 1, order), count, min/max create_time and
// Digest.
func Verify(ctx context.Context, b *blob.Bucket, month time.Time, exportID string) (Manifest, error) {
	return Read(ctx, b, month, exportID, func(*Row) error { return nil })
}

type reader struct {
	ctx        context.Context
	b          *blob.Bucket
	prefix     string
	m          *Manifest
	fn         func(*Row) error
	start, end time.Time

	digest  *Digest
	rows    int64
	min     time.Time
	max     time.Time
	lastKey struct { // version 1: the previous row's, for the order check
		t  int64
		id [16]byte
	}
}

func (rd *reader) corrupt(file, format string, args ...any) error {
	return fmt.Errorf("%w: %s%s: %s", ErrCorrupt, rd.prefix, file, fmt.Sprintf(format, args...))
}

func (rd *reader) readFile(f File) error {
	tmp, err := os.CreateTemp("", "coldstore-*.parquet")
	if err != nil {
		return fmt.Errorf("coldstore: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if err := rd.download(f, tmp); err != nil {
		return err
	}
	return rd.decodeFile(f, tmp)
}

// download copies f into tmp, checking its size and SHA-256.
func (rd *reader) download(f File, tmp *os.File) error {
	key := rd.prefix + f.Name
	r, err := rd.b.NewReader(rd.ctx, key, nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return rd.corrupt(f.Name, "missing file")
		}
		return fmt.Errorf("coldstore: open %s: %w", key, err)
	}
	defer r.Close()
	h := sha256.New()
	// Read at most one byte more than expected: enough to tell it is longer.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, f.Bytes+1))
	if err != nil {
		return fmt.Errorf("coldstore: read %s: %w", key, err)
	}
	if n != f.Bytes {
		return rd.corrupt(f.Name, "size is %d bytes, manifest says %d", n, f.Bytes)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 {
		return rd.corrupt(f.Name, "checksum mismatch: SHA-256 is %s, manifest says %s", sum, f.SHA256)
	}
	return nil
}

// decodeFile reads the rows of a downloaded file, whose bytes are those the
// manifest names. Decoding is guarded against panics of the Parquet
// library on malformed input; fn's panics are not caught.
func (rd *reader) decodeFile(f File, tmp *os.File) (err error) {
	pf, err := guard(func() (*parquet.File, error) {
		return parquet.OpenFile(tmp, f.Bytes, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	})
	if err != nil {
		return rd.corrupt(f.Name, "not a readable Parquet file: %v", err)
	}
	if v, _ := pf.Lookup(metaKeySchema); v != fmt.Sprint(rd.m.SchemaVersion) {
		return rd.corrupt(f.Name, "file schema version %q, manifest says %d", v, rd.m.SchemaVersion)
	}
	// Versions 1 and 2 share the Parquet schema.
	if sig := schemaSignature(pf.Schema()); sig != wantSignature {
		return rd.corrupt(f.Name, "Parquet schema differs from schema version %d: %s", rd.m.SchemaVersion, sig)
	}
	if n := pf.NumRows(); n != f.Rows {
		return rd.corrupt(f.Name, "row count is %d, manifest says %d", n, f.Rows)
	}
	var fileRows int64
	batch := make([]parquet.Row, readBatch)
	decoded := make([]*Row, 0, readBatch)
	for _, rg := range pf.RowGroups() {
		rows := rg.Rows()
		err := func() error {
			defer rows.Close()
			for {
				if err := rd.ctx.Err(); err != nil {
					return fmt.Errorf("coldstore: read: %w", err)
				}
				var eof bool
				decoded, eof, err = guard2(func() ([]*Row, bool, error) { return decodeBatch(rows, batch, decoded[:0]) })
				if err != nil {
					return rd.corrupt(f.Name, "row %d: %v", fileRows+int64(len(decoded)), err)
				}
				for _, r := range decoded {
					if err := rd.check(f, r); err != nil {
						return err
					}
					fileRows++
					if err := rd.fn(r); err != nil {
						return err
					}
				}
				if eof {
					return nil
				}
			}
		}()
		if err != nil {
			return err
		}
	}
	if fileRows != f.Rows {
		return rd.corrupt(f.Name, "read %d rows, manifest says %d", fileRows, f.Rows)
	}
	return nil
}

// decodeBatch reads up to len(batch) rows and appends them, decoded, to
// out; eof reports the end of the rows.
func decodeBatch(rows parquet.Rows, batch []parquet.Row, out []*Row) ([]*Row, bool, error) {
	n, err := rows.ReadRows(batch)
	eof := errors.Is(err, io.EOF)
	if err != nil && !eof {
		return out, false, err
	}
	for i := range n {
		r, err := decodeRow(batch[i])
		if err != nil {
			return out, false, err
		}
		out = append(out, r)
	}
	if n == 0 && !eof {
		return out, false, errors.New("no progress reading rows")
	}
	return out, eof, nil
}

// check verifies r's place in the export and adds it to the digest.
func (rd *reader) check(f File, r *Row) error {
	t := r.CreateTime
	if t.Before(rd.start) || !t.Before(rd.end) {
		return rd.corrupt(f.Name, "row %x: create_time %s is outside %s", r.ID, t.Format(time.RFC3339Nano), rd.m.Month)
	}
	if rd.m.SchemaVersion == 1 {
		us := t.UnixMicro()
		if rd.rows > 0 && compareKey(us, r.ID, rd.lastKey.t, rd.lastKey.id) <= 0 {
			return rd.corrupt(f.Name, "row %x (%s) is out of (create_time, id) order", r.ID, t.Format(time.RFC3339Nano))
		}
		rd.lastKey.t, rd.lastKey.id = us, r.ID
	}
	if rd.rows == 0 || t.Before(rd.min) {
		rd.min = t
	}
	if rd.rows == 0 || t.After(rd.max) {
		rd.max = t
	}
	rd.rows++
	rd.digest.Add(r)
	return nil
}

func (rd *reader) finish() error {
	m := rd.m
	if rd.rows != m.Rows {
		return rd.corrupt(manifestName, "export holds %d rows, manifest says %d", rd.rows, m.Rows)
	}
	if rd.rows > 0 && (!rd.min.Equal(m.MinCreateTime) || !rd.max.Equal(m.MaxCreateTime)) {
		return rd.corrupt(manifestName, "create_time range is %s..%s, manifest says %s..%s",
			rd.min.Format(time.RFC3339Nano), rd.max.Format(time.RFC3339Nano),
			m.MinCreateTime.Format(time.RFC3339Nano), m.MaxCreateTime.Format(time.RFC3339Nano))
	}
	if sum := rd.digest.Sum(); sum != m.Digest {
		return rd.corrupt(manifestName, "digest mismatch: rows digest to %s, manifest says %s", sum, m.Digest)
	}
	return nil
}

// guard runs f, turning a panic into an error.
func guard[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

func guard2[T, U any](f func() (T, U, error)) (v T, u U, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}
