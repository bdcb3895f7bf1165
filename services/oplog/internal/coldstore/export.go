package coldstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
	"gocloud.dev/blob"
)

// ExportOptions tune an Exporter; the zero value is the default.
type ExportOptions struct {
	// RowGroupRows is the number of rows per Parquet row group (default
	// 100_000). The Exporter buffers one row group in memory.
	RowGroupRows int
	// FileRows is the number of rows per Parquet file (default 2_000_000);
	// a month larger than that is split into several files.
	FileRows int64
	// Progress, if set, is called with the rows written and the Parquet
	// bytes handed to the bucket so far, at most about once a second, after a row group is
	// flushed, and once more by Close. For CLI progress output.
	Progress func(rows, bytes int64)
	// Now is the clock for Manifest.CreateTime (default time.Now).
	Now func() time.Time
}

// Defaults of ExportOptions.
const (
	DefaultRowGroupRows = 100_000
	DefaultFileRows     = 2_000_000
)

const (
	parquetContentType = "application/vnd.apache.parquet"
	progressInterval   = time.Second
	cleanupTimeout     = time.Minute
	metaKeySchema      = "platforma.coldstore.schema_version"
	metaKeyExportID    = "platforma.coldstore.export_id"
	metaKeyMonth       = "platforma.coldstore.month"
	metaKeyPart        = "platforma.coldstore.part"
	createdByApp       = "platforma oplog coldstore"
)

// Exporter writes one month's rows as an export: Parquet files, then the
// manifest. Use it from one goroutine:
//
//	ex, err := coldstore.NewExporter(ctx, bucket, month, id, coldstore.ExportOptions{})
//	if err != nil { ... }
//	defer ex.Abort() // no-op once Close succeeded
//	for each row, in any order { if err := ex.Write(&row); err != nil { return err } }
//	manifest, err := ex.Close()
//
// Memory stays bounded by one row group (RowGroupRows rows, plus the blob
// writer's upload buffers) whatever the month's size.
type Exporter struct {
	ctx        context.Context
	b          *blob.Bucket
	month      string
	start, end time.Time
	exportID   string
	prefix     string
	opts       ExportOptions

	cur     *partWriter // nil between files
	files   []File
	written []string // keys of completed files, for Abort
	row     parquet.Row
	rowbuf  []parquet.Row
	digest  *Digest
	rows    int64
	bytes   int64 // bytes of completed files
	minTime time.Time
	maxTime time.Time

	lastProgress time.Time
	err          error // sticky: after an error only Abort is useful
	done         bool  // Close succeeded
	aborted      bool
}

// partWriter is the Parquet file being written.
type partWriter struct {
	name   string
	key    string
	cancel context.CancelFunc
	bw     *blob.Writer
	out    *hashWriter
	pw     *parquet.Writer
	rows   int64
	rgRows int
}

// hashWriter counts and hashes what passes through it.
type hashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

// NewExporter starts export exportID of month (any time in the UTC month)
// in b. It fails with ErrExists if anything is stored under the export's
// prefix already. ctx bounds the whole export, up to Close.
func NewExporter(ctx context.Context, b *blob.Bucket, month time.Time, exportID string, opts ExportOptions) (*Exporter, error) {
	if err := checkExportID(exportID); err != nil {
		return nil, err
	}
	if opts.RowGroupRows < 0 || opts.FileRows < 0 {
		return nil, fmt.Errorf("coldstore: negative RowGroupRows or FileRows")
	}
	if opts.RowGroupRows == 0 {
		opts.RowGroupRows = DefaultRowGroupRows
	}
	if opts.FileRows == 0 {
		opts.FileRows = DefaultFileRows
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	prefix := exportPrefix(month, exportID)
	empty, err := isEmpty(ctx, b, prefix)
	if err != nil {
		return nil, err
	}
	if !empty {
		return nil, fmt.Errorf("%w: %s is not empty", ErrExists, prefix)
	}
	digest, err := NewDigest(SchemaVersion)
	if err != nil {
		return nil, err
	}
	start, end := monthBounds(month)
	return &Exporter{
		ctx:          ctx,
		b:            b,
		month:        monthString(month),
		start:        start,
		end:          end,
		exportID:     exportID,
		prefix:       prefix,
		opts:         opts,
		row:          make(parquet.Row, 0, numColumns),
		rowbuf:       make([]parquet.Row, 1),
		digest:       digest,
		lastProgress: time.Now(),
	}, nil
}

// Write adds r to the export. Rows may come in any order (the order of
// the month's pages) but must lie within the month;
// create_time must have no finer part than microseconds. After an error the export can only be
// aborted: Write and Close return the same error again.
func (e *Exporter) Write(r *Row) error {
	if e.err != nil {
		return e.err
	}
	if e.done || e.aborted {
		return errors.New("coldstore: Write after Close or Abort")
	}
	if err := e.check(r); err != nil {
		e.err = err
		return err
	}
	if err := e.write(r); err != nil {
		e.err = err
		return err
	}
	return nil
}

func (e *Exporter) check(r *Row) error {
	t := r.CreateTime
	if t.Before(e.start) || !t.Before(e.end) {
		return fmt.Errorf("coldstore: row %x: create_time %s is outside %s", r.ID, t.UTC().Format(time.RFC3339Nano), e.month)
	}
	if t.Nanosecond()%1000 != 0 {
		return fmt.Errorf("coldstore: row %x: create_time %s has sub-microsecond precision", r.ID, t.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

func (e *Exporter) write(r *Row) error {
	if err := e.ctx.Err(); err != nil {
		return fmt.Errorf("coldstore: export: %w", err)
	}
	if e.cur == nil {
		if err := e.openPart(); err != nil {
			return err
		}
	}
	p := e.cur
	e.row = appendRow(e.row[:0], r)
	e.rowbuf[0] = e.row
	if _, err := p.pw.WriteRows(e.rowbuf); err != nil {
		return fmt.Errorf("coldstore: write %s: %w", p.key, err)
	}
	e.digest.Add(r)
	t := r.CreateTime.UTC()
	if e.rows == 0 || t.Before(e.minTime) {
		e.minTime = t
	}
	if e.rows == 0 || t.After(e.maxTime) {
		e.maxTime = t
	}
	e.rows++
	p.rows++
	p.rgRows++
	if p.rgRows >= e.opts.RowGroupRows && p.rows < e.opts.FileRows {
		if err := p.pw.Flush(); err != nil {
			return fmt.Errorf("coldstore: write %s: %w", p.key, err)
		}
		p.rgRows = 0
		e.progress(false)
	}
	if p.rows >= e.opts.FileRows {
		if err := e.finishPart(); err != nil {
			return err
		}
		e.progress(false)
	}
	return nil
}

// storedBytes is what has reached the bucket's writer so far.
func (e *Exporter) storedBytes() int64 {
	n := e.bytes
	if e.cur != nil {
		n += e.cur.out.n
	}
	return n
}

func (e *Exporter) progress(final bool) {
	if e.opts.Progress == nil {
		return
	}
	now := time.Now()
	if !final && now.Sub(e.lastProgress) < progressInterval {
		return
	}
	e.lastProgress = now
	e.opts.Progress(e.rows, e.storedBytes())
}

func (e *Exporter) openPart() error {
	name := partName(len(e.files))
	key := e.prefix + name
	ctx, cancel := context.WithCancel(e.ctx)
	bw, err := e.b.NewWriter(ctx, key, &blob.WriterOptions{ContentType: parquetContentType})
	if err != nil {
		cancel()
		return fmt.Errorf("coldstore: create %s: %w", key, err)
	}
	out := &hashWriter{w: bw, h: sha256.New()}
	pw := parquet.NewWriter(out, schema,
		parquet.Compression(&zstd.Codec{Level: zstd.SpeedDefault}),
		parquet.MaxRowsPerRowGroup(int64(e.opts.RowGroupRows)),
		parquet.CreatedBy(createdByApp, "schema-"+strconv.Itoa(SchemaVersion), ""),
		parquet.KeyValueMetadata(metaKeySchema, strconv.Itoa(SchemaVersion)),
		parquet.KeyValueMetadata(metaKeyExportID, e.exportID),
		parquet.KeyValueMetadata(metaKeyMonth, e.month),
		parquet.KeyValueMetadata(metaKeyPart, strconv.Itoa(len(e.files))),
	)
	e.cur = &partWriter{name: name, key: key, cancel: cancel, bw: bw, out: out, pw: pw}
	return nil
}

// finishPart completes the current file: Parquet footer, then the blob
// write is committed.
func (e *Exporter) finishPart() error {
	p := e.cur
	if err := p.pw.Close(); err != nil {
		return fmt.Errorf("coldstore: write %s: %w", p.key, err)
	}
	err := p.bw.Close()
	p.cancel()
	e.cur = nil
	if err != nil {
		return fmt.Errorf("coldstore: store %s: %w", p.key, err)
	}
	e.written = append(e.written, p.key)
	e.files = append(e.files, File{Name: p.name, Rows: p.rows, Bytes: p.out.n, SHA256: hex.EncodeToString(p.out.h.Sum(nil))})
	e.bytes += p.out.n
	return nil
}

// Close completes the export: it finishes the last Parquet file, then
// writes manifest.json, and returns the manifest. On error it removes what
// was written, as Abort does, and the export does not exist.
func (e *Exporter) Close() (Manifest, error) {
	if e.done {
		return Manifest{}, errors.New("coldstore: Close called twice")
	}
	if e.aborted {
		return Manifest{}, errors.New("coldstore: Close after Abort")
	}
	m, err := e.close()
	if err != nil {
		if e.err == nil {
			e.err = err
		}
		e.Abort()
		return Manifest{}, err
	}
	e.done = true
	e.progress(true)
	return m, nil
}

func (e *Exporter) close() (Manifest, error) {
	if e.err != nil {
		return Manifest{}, e.err
	}
	if err := e.ctx.Err(); err != nil {
		return Manifest{}, fmt.Errorf("coldstore: export: %w", err)
	}
	if e.cur != nil {
		if err := e.finishPart(); err != nil {
			return Manifest{}, err
		}
	}
	m := Manifest{
		SchemaVersion: SchemaVersion,
		ExportID:      e.exportID,
		Month:         e.month,
		Rows:          e.rows,
		MinCreateTime: e.minTime,
		MaxCreateTime: e.maxTime,
		Digest:        e.digest.Sum(),
		Files:         append([]File{}, e.files...),
		CreateTime:    e.opts.Now().UTC(),
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	key := e.prefix + manifestName
	// IfNotExist: a concurrent exporter of the same id cannot replace it.
	if err := e.b.WriteAll(e.ctx, key, append(data, '\n'), &blob.WriterOptions{ContentType: "application/json", IfNotExist: true}); err != nil {
		return Manifest{}, fmt.Errorf("coldstore: store %s: %w", key, err)
	}
	return m, nil
}

// Abort abandons the export and removes what it wrote. It does nothing
// after a successful Close, so `defer ex.Abort()` is the usual way to clean
// up after errors. Removal is best effort (it uses a fresh context, the
// export's may be cancelled); Delete removes leftovers.
func (e *Exporter) Abort() {
	if e.done || e.aborted {
		return
	}
	e.aborted = true
	if e.err == nil {
		e.err = errors.New("coldstore: export aborted")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), cleanupTimeout)
	defer cancel()
	keys := e.written
	if p := e.cur; p != nil {
		p.cancel() // aborts the upload; Close then discards it
		_ = p.bw.Close()
		keys = append(keys, p.key)
		e.cur = nil
	}
	for _, k := range keys {
		_ = deleteKey(ctx, e.b, k)
	}
}
