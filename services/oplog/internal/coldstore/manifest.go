package coldstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

var (
	// ErrCorrupt is wrapped by every error that means an export is bad:
	// a missing or malformed file, a checksum, row count or digest that
	// differs from the manifest, a manifest that does not fit its month.
	ErrCorrupt = errors.New("coldstore: export is corrupt")
	// ErrNotFound: the export has no manifest (it does not exist, or it
	// is incomplete: the manifest is written last).
	ErrNotFound = errors.New("coldstore: export not found")
	// ErrExists: NewExporter found objects under the export's prefix.
	ErrExists = errors.New("coldstore: export already exists")
)

// File is one Parquet file of an export.
type File struct {
	// Name is the file's name within the export, e.g. "part-00000.parquet".
	Name  string `json:"name"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
	// SHA256 is the hex SHA-256 of the file's bytes.
	SHA256 string `json:"sha256"`
}

// Manifest describes a complete export; it is written last, as
// manifest.json, so an export without one is incomplete.
type Manifest struct {
	SchemaVersion int    `json:"schema_version"`
	ExportID      string `json:"export_id"`
	// Month is the UTC month, "2025-03".
	Month string `json:"month"`
	Rows  int64  `json:"rows"`
	// MinCreateTime and MaxCreateTime are the first and last rows'
	// create_time; zero when the export has no rows.
	MinCreateTime time.Time `json:"min_create_time"`
	MaxCreateTime time.Time `json:"max_create_time"`
	// Digest is the Digest of all rows, of SchemaVersion's kind.
	Digest string `json:"digest"`
	// Files are in the order their rows were written.
	Files []File `json:"files"`
	// CreateTime is when the export was completed.
	CreateTime time.Time `json:"create_time"`
}

// Bytes is the size of the export's files.
func (m Manifest) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Bytes
	}
	return n
}

const (
	rootPrefix   = "operation_logs/"
	manifestName = "manifest.json"
	monthLayout  = "2006-01"
)

// MonthPrefix is where a month's exports live: "operation_logs/2025-03/".
// An export is under MonthPrefix(month)+exportID+"/", with its Parquet
// files part-00000.parquet, part-00001.parquet, ... and manifest.json.
// month is any time in the month; the month is taken in UTC.
func MonthPrefix(month time.Time) string {
	return rootPrefix + monthString(month) + "/"
}

func monthString(month time.Time) string { return month.UTC().Format(monthLayout) }

// monthBounds returns [start, end) of month's UTC month.
func monthBounds(month time.Time) (time.Time, time.Time) {
	m := month.UTC()
	start := time.Date(m.Year(), m.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

func exportPrefix(month time.Time, exportID string) string {
	return MonthPrefix(month) + exportID + "/"
}

func partName(i int) string { return fmt.Sprintf("part-%05d.parquet", i) }

var (
	exportIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	partPattern     = regexp.MustCompile(`^part-[0-9]{5,}\.parquet$`)
)

// checkExportID: an export id is a single path segment of letters, digits,
// '.', '_' and '-' (at most 128, not starting with a dot), e.g. a uuid or
// "20250401T020000Z".
func checkExportID(id string) error {
	if !exportIDPattern.MatchString(id) {
		return fmt.Errorf("coldstore: invalid export id %q (want 1-128 of [A-Za-z0-9._-], starting with a letter or digit)", id)
	}
	return nil
}

// ReadManifest reads an export's manifest. It returns an error wrapping
// ErrNotFound if there is none, and ErrCorrupt if it is not a manifest.
// It does not check the manifest against the files (Verify does).
func ReadManifest(ctx context.Context, b *blob.Bucket, month time.Time, exportID string) (Manifest, error) {
	if err := checkExportID(exportID); err != nil {
		return Manifest{}, err
	}
	key := exportPrefix(month, exportID) + manifestName
	data, err := b.ReadAll(ctx, key)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return Manifest{}, fmt.Errorf("%w: no %s", ErrNotFound, key)
		}
		return Manifest{}, fmt.Errorf("coldstore: read %s: %w", key, err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Manifest{}, fmt.Errorf("%w: %s: data after the manifest", ErrCorrupt, key)
	}
	return m, nil
}

// checkManifest checks that m is a sane manifest of exportID in month:
// known schema version, its month and id, file names and row counts that
// add up, and min/max create times within the month.
func checkManifest(m *Manifest, month time.Time, exportID string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s%s: %s", ErrCorrupt, exportPrefix(month, exportID), manifestName, fmt.Sprintf(format, args...))
	}
	if m.SchemaVersion < 1 || m.SchemaVersion > SchemaVersion {
		return bad("unknown schema version %d (this build reads 1 to %d)", m.SchemaVersion, SchemaVersion)
	}
	if m.Month != monthString(month) {
		return bad("month is %q, want %q", m.Month, monthString(month))
	}
	if m.ExportID != exportID {
		return bad("export id is %q, want %q", m.ExportID, exportID)
	}
	if m.Rows < 0 {
		return bad("row count %d", m.Rows)
	}
	if len(m.Digest) != 64 {
		return bad("digest %q is not a hex SHA-256", m.Digest)
	}
	var sum int64
	seen := make(map[string]bool, len(m.Files))
	for i, f := range m.Files {
		if !partPattern.MatchString(f.Name) || seen[f.Name] {
			return bad("file %d has a bad or repeated name %q", i, f.Name)
		}
		seen[f.Name] = true
		if f.Rows <= 0 || f.Bytes <= 0 || len(f.SHA256) != 64 {
			return bad("file %s: rows %d, bytes %d, sha256 %q", f.Name, f.Rows, f.Bytes, f.SHA256)
		}
		sum += f.Rows
	}
	if sum != m.Rows {
		return bad("files hold %d rows, manifest says %d", sum, m.Rows)
	}
	start, end := monthBounds(month)
	if m.Rows == 0 {
		if !m.MinCreateTime.IsZero() || !m.MaxCreateTime.IsZero() {
			return bad("no rows but min/max create_time %v/%v", m.MinCreateTime, m.MaxCreateTime)
		}
		return nil
	}
	if m.MinCreateTime.Before(start) || !m.MaxCreateTime.Before(end) || m.MaxCreateTime.Before(m.MinCreateTime) {
		return bad("create_time range %v..%v is not within %s", m.MinCreateTime, m.MaxCreateTime, m.Month)
	}
	return nil
}

// Exports lists the ids of month's exports that have a manifest (complete
// exports), sorted.
func Exports(ctx context.Context, b *blob.Bucket, month time.Time) ([]string, error) {
	prefix := MonthPrefix(month)
	it := b.List(&blob.ListOptions{Prefix: prefix, Delimiter: "/"})
	var ids []string
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("coldstore: list %s: %w", prefix, err)
		}
		if !obj.IsDir {
			continue
		}
		id := strings.TrimSuffix(strings.TrimPrefix(obj.Key, prefix), "/")
		if checkExportID(id) != nil {
			continue
		}
		ok, err := b.Exists(ctx, obj.Key+manifestName)
		if err != nil {
			return nil, fmt.Errorf("coldstore: %w", err)
		}
		if ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Delete removes an export, complete or not: its manifest first (so an
// interrupted Delete leaves an incomplete export, never a manifest without
// its files), then everything else under its prefix. Deleting an export
// that does not exist is not an error.
func Delete(ctx context.Context, b *blob.Bucket, month time.Time, exportID string) error {
	if err := checkExportID(exportID); err != nil {
		return err
	}
	prefix := exportPrefix(month, exportID)
	if err := deleteKey(ctx, b, prefix+manifestName); err != nil {
		return err
	}
	// Collect first: deleting while listing can skip keys on some services.
	var keys []string
	it := b.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("coldstore: list %s: %w", prefix, err)
		}
		if !obj.IsDir {
			keys = append(keys, obj.Key)
		}
	}
	for _, k := range keys {
		if err := deleteKey(ctx, b, k); err != nil {
			return err
		}
	}
	return nil
}

func deleteKey(ctx context.Context, b *blob.Bucket, key string) error {
	if err := b.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("coldstore: delete %s: %w", key, err)
	}
	return nil
}

// isEmpty reports whether nothing is stored under prefix.
func isEmpty(ctx context.Context, b *blob.Bucket, prefix string) (bool, error) {
	objs, _, err := b.ListPage(ctx, blob.FirstPageToken, 1, &blob.ListOptions{Prefix: prefix})
	if err != nil {
		return false, fmt.Errorf("coldstore: list %s: %w", prefix, err)
	}
	return len(objs) == 0, nil
}
