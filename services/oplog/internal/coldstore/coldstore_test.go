package coldstore

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gocloud.dev/blob"

	"github.com/platforma/platforma/services/kit/miniotest"
)

func TestMain(m *testing.M) { miniotest.Main(m) }

// backends runs f against a local directory and against a bucket of the
// test binary's MinIO server, as parallel subtests.
func backends(t *testing.T, f func(t *testing.T, b *blob.Bucket)) {
	t.Helper()
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		f(t, openDirBucket(t))
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		f(t, openS3Bucket(t))
	})
}

func openDirBucket(t testing.TB) *blob.Bucket {
	b, err := OpenBucket(context.Background(), "file://"+filepath.Join(t.TempDir(), "cold"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func openS3Bucket(t testing.TB) *blob.Bucket {
	srv := miniotest.Start(t)
	b, err := OpenBucketWith(context.Background(), srv.URL(srv.Bucket(t)), Credentials{AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// export writes rows gen(0..n-1) as export id of testMonth.
func export(t testing.TB, b *blob.Bucket, id string, n int, gen func(i, n int) *Row, opts ExportOptions) Manifest {
	t.Helper()
	ex, err := NewExporter(t.Context(), b, testMonth, id, opts)
	require.NoError(t, err)
	defer ex.Abort()
	for i := range n {
		require.NoError(t, ex.Write(gen(i, n)))
	}
	m, err := ex.Close()
	require.NoError(t, err)
	return m
}

// newTestDigest is an empty Digest of version.
func newTestDigest(t testing.TB, version int) *Digest {
	t.Helper()
	d, err := NewDigest(version)
	require.NoError(t, err)
	return d
}

func digestOf(t testing.TB, n int, gen func(i, n int) *Row) string {
	d := newTestDigest(t, SchemaVersion)
	for i := range n {
		d.Add(gen(i, n))
	}
	return d.Sum()
}

const (
	roundTripRows = 250_000
	smallRows     = 25_000
)

var smallOpts = ExportOptions{RowGroupRows: 2_000, FileRows: 7_000}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, b *blob.Bucket) {
		var progressCalls int
		var lastRows, lastBytes int64
		now := time.Date(2025, time.April, 1, 2, 3, 4, 5, time.UTC)
		opts := ExportOptions{
			RowGroupRows: 10_000, FileRows: 60_000,
			Progress: func(rows, bytes int64) { progressCalls++; lastRows, lastBytes = rows, bytes },
			Now:      func() time.Time { return now },
		}
		m := export(t, b, "rt-1", roundTripRows, oddRow, opts)

		// The manifest.
		start, end := monthBounds(testMonth)
		assert.Equal(t, SchemaVersion, m.SchemaVersion)
		assert.Equal(t, "rt-1", m.ExportID)
		assert.Equal(t, "2025-03", m.Month)
		assert.Equal(t, int64(roundTripRows), m.Rows)
		assert.True(t, m.MinCreateTime.Equal(start), "min %v", m.MinCreateTime)
		assert.True(t, m.MaxCreateTime.Equal(end.Add(-time.Microsecond)), "max %v", m.MaxCreateTime)
		assert.Equal(t, now, m.CreateTime)
		assert.Equal(t, digestOf(t, roundTripRows, oddRow), m.Digest)
		require.Len(t, m.Files, 5) // 4 × 60,000 + 10,000
		var sum, bytes int64
		for i, f := range m.Files {
			assert.Equal(t, partName(i), f.Name)
			assert.Len(t, f.SHA256, 64)
			sum += f.Rows
			bytes += f.Bytes
			wantRows := int64(60_000)
			if i == 4 {
				wantRows = 10_000
			}
			assert.Equal(t, wantRows, f.Rows, f.Name)
		}
		assert.Equal(t, m.Rows, sum)
		assert.Positive(t, progressCalls)
		assert.Equal(t, m.Rows, lastRows, "the last progress call has every row")
		assert.Equal(t, bytes, lastBytes, "and every byte")

		// The stored manifest is the one returned.
		stored, err := ReadManifest(t.Context(), b, testMonth, "rt-1")
		require.NoError(t, err)
		assert.Equal(t, m, stored)
		ids, err := Exports(t.Context(), b, testMonth)
		require.NoError(t, err)
		assert.Equal(t, []string{"rt-1"}, ids)

		// Read gives back exactly the rows written, in order.
		i := 0
		got, err := Read(t.Context(), b, testMonth, "rt-1", func(r *Row) error {
			want := oddRow(i, roundTripRows)
			if !reflect.DeepEqual(want, r) {
				require.Equal(t, want, r, "row %d", i) // shows the difference
			}
			i++
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, roundTripRows, i)
		assert.Equal(t, m, got)

		// Row groups and files are as asked.
		assertRowGroups(t, b, m, 10_000)
	})
}

// assertRowGroups checks every file's row groups hold rowGroupRows rows
// (the last of a file fewer).
func assertRowGroups(t *testing.T, b *blob.Bucket, m Manifest, rowGroupRows int64) {
	t.Helper()
	for _, f := range m.Files {
		data, err := b.ReadAll(t.Context(), exportPrefix(testMonth, m.ExportID)+f.Name)
		require.NoError(t, err)
		pf, err := openParquetBytes(data)
		require.NoError(t, err)
		groups := pf.RowGroups()
		require.NotEmpty(t, groups)
		for i, rg := range groups {
			if i < len(groups)-1 {
				assert.Equal(t, rowGroupRows, rg.NumRows(), "%s row group %d", f.Name, i)
			} else {
				assert.LessOrEqual(t, rg.NumRows(), rowGroupRows)
				assert.Positive(t, rg.NumRows(), "no empty row group")
			}
		}
		v, ok := pf.Lookup(metaKeyExportID)
		assert.True(t, ok)
		assert.Equal(t, m.ExportID, v)
		assert.Equal(t, schema.String(), pf.Schema().String(), "the file's schema is the documented one")
	}
}

func TestEmptyExport(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, b *blob.Bucket) {
		m := export(t, b, "empty", 0, oddRow, ExportOptions{})
		assert.Zero(t, m.Rows)
		assert.Empty(t, m.Files)
		assert.NotNil(t, m.Files, "files is [] in JSON, not null")
		assert.True(t, m.MinCreateTime.IsZero())
		assert.Equal(t, newTestDigest(t, SchemaVersion).Sum(), m.Digest)
		got, err := Verify(t.Context(), b, testMonth, "empty")
		require.NoError(t, err)
		assert.Equal(t, m, got)
	})
}

// Corruption tests use copies of one export of corruptRows rows in 4 files.
const corruptRows = 8_000

var corruptOpts = ExportOptions{RowGroupRows: 1_000, FileRows: 2_500}

// copyExport copies export from to export to (server-side), fixing the
// manifest's export id.
func copyExport(t *testing.T, b *blob.Bucket, from, to string) {
	t.Helper()
	it := b.List(&blob.ListOptions{Prefix: exportPrefix(testMonth, from)})
	for {
		obj, err := it.Next(t.Context())
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		name := strings.TrimPrefix(obj.Key, exportPrefix(testMonth, from))
		require.NoError(t, b.Copy(t.Context(), key(to, name), obj.Key, nil))
	}
	editManifest(t, b, to, func(m map[string]any) { m["export_id"] = to })
}

func key(id, name string) string { return exportPrefix(testMonth, id) + name }

// editManifest rewrites an export's manifest.json through edit.
func editManifest(t *testing.T, b *blob.Bucket, id string, edit func(m map[string]any)) {
	t.Helper()
	data, err := b.ReadAll(t.Context(), key(id, manifestName))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	edit(m)
	data, err = json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, b.WriteAll(t.Context(), key(id, manifestName), data, nil))
}

func requireCorrupt(t *testing.T, b *blob.Bucket, id string, wantInMessage ...string) {
	t.Helper()
	_, err := Verify(t.Context(), b, testMonth, id)
	require.ErrorIs(t, err, ErrCorrupt)
	for _, s := range wantInMessage {
		assert.Contains(t, err.Error(), s)
	}
	// Read says the same.
	_, err2 := Read(t.Context(), b, testMonth, id, func(*Row) error { return nil })
	require.ErrorIs(t, err2, ErrCorrupt)
}

func TestCorruption(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, b *blob.Bucket) {
		golden := export(t, b, "golden", corruptRows, oddRow, corruptOpts)
		require.Len(t, golden.Files, 4)
		_, err := Verify(t.Context(), b, testMonth, "golden")
		require.NoError(t, err)
		// corruptible makes a copy of the golden export, as id.
		corruptible := func(t *testing.T, id string) Manifest {
			t.Helper()
			copyExport(t, b, "golden", id)
			m := golden
			m.ExportID = id
			return m
		}
		t.Run("flipped byte", func(t *testing.T) {
			m := corruptible(t, "flip")
			k := key("flip", m.Files[1].Name)
			data, err := b.ReadAll(t.Context(), k)
			require.NoError(t, err)
			data[len(data)/2] ^= 0x01
			require.NoError(t, b.WriteAll(t.Context(), k, data, nil))
			requireCorrupt(t, b, "flip", "part-00001.parquet", "checksum mismatch")
			// No row of the bad file is handed out: its checksum is checked
			// before it is decoded.
			n := int64(0)
			_, err = Read(t.Context(), b, testMonth, "flip", func(*Row) error { n++; return nil })
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Equal(t, m.Files[0].Rows, n)
		})
		t.Run("truncated file", func(t *testing.T) {
			m := corruptible(t, "trunc")
			k := key("trunc", m.Files[2].Name)
			data, err := b.ReadAll(t.Context(), k)
			require.NoError(t, err)
			require.NoError(t, b.WriteAll(t.Context(), k, data[:len(data)-10], nil))
			requireCorrupt(t, b, "trunc", "part-00002.parquet", "size")
		})
		t.Run("missing file", func(t *testing.T) {
			m := corruptible(t, "missing")
			require.NoError(t, b.Delete(t.Context(), key("missing", m.Files[3].Name)))
			requireCorrupt(t, b, "missing", "part-00003.parquet", "missing file")
		})
		t.Run("manifest row count", func(t *testing.T) {
			corruptible(t, "rows")
			editManifest(t, b, "rows", func(m map[string]any) { m["rows"] = float64(corruptRows - 1) })
			requireCorrupt(t, b, "rows", "manifest.json", "rows")
		})
		t.Run("manifest file row count", func(t *testing.T) {
			// Consistent within the manifest, wrong for the file.
			corruptible(t, "filerows")
			editManifest(t, b, "filerows", func(m map[string]any) {
				m["rows"] = float64(corruptRows + 1)
				f := m["files"].([]any)[0].(map[string]any)
				f["rows"] = f["rows"].(float64) + 1
			})
			requireCorrupt(t, b, "filerows", "part-00000.parquet", "row count")
		})
		t.Run("manifest digest", func(t *testing.T) {
			corruptible(t, "digest")
			editManifest(t, b, "digest", func(m map[string]any) {
				m["digest"] = strings.Repeat("ab", 32)
			})
			requireCorrupt(t, b, "digest", "digest mismatch")
		})
		t.Run("manifest max time", func(t *testing.T) {
			corruptible(t, "maxtime")
			editManifest(t, b, "maxtime", func(m map[string]any) {
				m["max_create_time"] = "2025-03-31T23:59:59.999998Z"
			})
			requireCorrupt(t, b, "maxtime", "create_time range")
		})
		t.Run("manifest outside month", func(t *testing.T) {
			corruptible(t, "month")
			editManifest(t, b, "month", func(m map[string]any) {
				m["max_create_time"] = "2025-04-01T00:00:00Z"
			})
			requireCorrupt(t, b, "month", "not within 2025-03")
		})
		t.Run("manifest of another month", func(t *testing.T) {
			corruptible(t, "othermonth")
			editManifest(t, b, "othermonth", func(m map[string]any) { m["month"] = "2025-02" })
			requireCorrupt(t, b, "othermonth", `month is "2025-02"`)
		})
		t.Run("unknown schema version", func(t *testing.T) {
			corruptible(t, "version")
			editManifest(t, b, "version", func(m map[string]any) { m["schema_version"] = float64(99) })
			requireCorrupt(t, b, "version", "unknown schema version 99")
		})
		t.Run("manifest not json", func(t *testing.T) {
			corruptible(t, "garbage")
			require.NoError(t, b.WriteAll(t.Context(), key("garbage", manifestName), []byte("{not json"), nil))
			requireCorrupt(t, b, "garbage", "manifest.json")
		})
		t.Run("files swapped", func(t *testing.T) {
			// Every file intact and matching its manifest entry, in another
			// order: the same rows, so still a good export (order means
			// nothing since schema version 2).
			m := corruptible(t, "swapped")
			editManifest(t, b, "swapped", func(m map[string]any) {
				fs := m["files"].([]any)
				fs[0], fs[1] = fs[1], fs[0]
			})
			got, err := Verify(t.Context(), b, testMonth, "swapped")
			require.NoError(t, err)
			assert.Equal(t, m.Digest, got.Digest)
		})
		t.Run("file listed twice", func(t *testing.T) {
			// The same file under two names, the manifest's counts made to
			// add up: rows twice over digest differently.
			m := corruptible(t, "twice")
			data, err := b.ReadAll(t.Context(), key("twice", m.Files[0].Name))
			require.NoError(t, err)
			require.NoError(t, b.WriteAll(t.Context(), key("twice", partName(len(m.Files))), data, nil))
			editManifest(t, b, "twice", func(mm map[string]any) {
				fs := mm["files"].([]any)
				dup := map[string]any{}
				for k, v := range fs[0].(map[string]any) {
					dup[k] = v
				}
				dup["name"] = partName(len(m.Files))
				mm["files"] = append(fs, dup)
				mm["rows"] = float64(m.Rows + m.Files[0].Rows)
			})
			requireCorrupt(t, b, "twice", "digest mismatch")
		})
		t.Run("file of another export", func(t *testing.T) {
			// A valid file of other rows under the right name, with the
			// manifest's checksum updated: only the digest can tell.
			m := corruptible(t, "replaced")
			other := export(t, b, "other", corruptRows, func(i, n int) *Row {
				r := oddRow(i, n)
				if i == 100 {
					r.RetryCount++ // one value differs
				}
				return r
			}, corruptOpts)
			data, err := b.ReadAll(t.Context(), key("other", other.Files[0].Name))
			require.NoError(t, err)
			require.NoError(t, b.WriteAll(t.Context(), key("replaced", m.Files[0].Name), data, nil))
			editManifest(t, b, "replaced", func(mm map[string]any) {
				f := mm["files"].([]any)[0].(map[string]any)
				f["sha256"] = other.Files[0].SHA256
				f["bytes"] = float64(other.Files[0].Bytes)
			})
			requireCorrupt(t, b, "replaced", "digest mismatch")
		})
		t.Run("no manifest", func(t *testing.T) {
			corruptible(t, "nomanifest")
			require.NoError(t, b.Delete(t.Context(), key("nomanifest", manifestName)))
			_, err := Verify(t.Context(), b, testMonth, "nomanifest")
			require.ErrorIs(t, err, ErrNotFound)
			ids, err := Exports(t.Context(), b, testMonth)
			require.NoError(t, err)
			assert.NotContains(t, ids, "nomanifest")
		})
	})
}

func TestReadStopsOnCallbackError(t *testing.T) {
	t.Parallel()
	b := openDirBucket(t)
	export(t, b, "cb", smallRows, oddRow, smallOpts)
	stop := errors.New("stop")
	n := 0
	_, err := Read(t.Context(), b, testMonth, "cb", func(*Row) error {
		n++
		if n == 10 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	assert.NotErrorIs(t, err, ErrCorrupt)
	assert.Equal(t, 10, n)
}

func TestWriteGuards(t *testing.T) {
	t.Parallel()
	start, end := monthBounds(testMonth)
	row := func(ts time.Time, id byte) *Row {
		r := oddRow(1, 10)
		r.CreateTime, r.ID = ts, [16]byte{id}
		return r
	}
	t0 := start.Add(time.Hour)
	cases := []struct {
		name string
		rows []*Row
		want string
	}{
		{"before the month", []*Row{row(start.Add(-time.Microsecond), 1)}, "outside 2025-03"},
		{"at the next month", []*Row{row(t0, 1), row(end, 2)}, "outside 2025-03"},
		{"another month", []*Row{row(end.AddDate(0, 5, 0), 1)}, "outside 2025-03"},
		{"nanoseconds", []*Row{row(t0.Add(time.Nanosecond), 1)}, "sub-microsecond"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := openDirBucket(t)
			ex, err := NewExporter(t.Context(), b, testMonth, "guard", ExportOptions{})
			require.NoError(t, err)
			var werr error
			for _, r := range c.rows {
				if werr = ex.Write(r); werr != nil {
					break
				}
			}
			require.Error(t, werr)
			assert.Contains(t, werr.Error(), c.want)
			// The error sticks: the export cannot be completed.
			assert.Equal(t, werr, ex.Write(row(end.Add(-time.Microsecond), 9)))
			_, err = ex.Close()
			require.Error(t, err)
			assertEmpty(t, b, MonthPrefix(testMonth))
		})
	}
	t.Run("rows in any order are fine", func(t *testing.T) {
		t.Parallel()
		b := openDirBucket(t)
		ex, err := NewExporter(t.Context(), b, testMonth, "ok", ExportOptions{})
		require.NoError(t, err)
		last := end.Add(-time.Microsecond)
		for _, r := range []*Row{row(t0, 0), row(last, 0), row(start, 2), row(start, 1)} {
			require.NoError(t, ex.Write(r))
		}
		m, err := ex.Close()
		require.NoError(t, err)
		assert.Equal(t, int64(4), m.Rows)
		assert.True(t, m.MinCreateTime.Equal(start), "min is the earliest row's, not the first's")
		assert.True(t, m.MaxCreateTime.Equal(last))
		// Any time in the month names the month.
		_, err = Verify(t.Context(), b, testMonth.Add(20*24*time.Hour), "ok")
		require.NoError(t, err)
	})
}

func assertEmpty(t *testing.T, b *blob.Bucket, prefix string) {
	t.Helper()
	objs, _, err := b.ListPage(t.Context(), blob.FirstPageToken, 10, &blob.ListOptions{Prefix: prefix})
	require.NoError(t, err)
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	assert.Empty(t, keys, "objects left under %s", prefix)
}

func TestAbortRemovesEverything(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, b *blob.Bucket) {
		ex, err := NewExporter(t.Context(), b, testMonth, "aborted", smallOpts)
		require.NoError(t, err)
		for i := range 20_000 { // two complete files and one being written
			require.NoError(t, ex.Write(oddRow(i, smallRows)))
		}
		ex.Abort()
		ex.Abort() // idempotent
		assertEmpty(t, b, MonthPrefix(testMonth))
		_, err = ex.Close()
		require.Error(t, err)

		// A cancelled context aborts too.
		ctx, cancel := context.WithCancel(t.Context())
		ex, err = NewExporter(ctx, b, testMonth, "cancelled", smallOpts)
		require.NoError(t, err)
		for i := range 10_000 {
			require.NoError(t, ex.Write(oddRow(i, smallRows)))
		}
		cancel()
		require.ErrorIs(t, ex.Write(oddRow(10_000, smallRows)), context.Canceled)
		_, err = ex.Close()
		require.ErrorIs(t, err, context.Canceled)
		assertEmpty(t, b, MonthPrefix(testMonth))

		// Abort after a successful Close keeps the export.
		ex, err = NewExporter(t.Context(), b, testMonth, "kept", smallOpts)
		require.NoError(t, err)
		require.NoError(t, ex.Write(oddRow(0, 10)))
		_, err = ex.Close()
		require.NoError(t, err)
		ex.Abort()
		_, err = Verify(t.Context(), b, testMonth, "kept")
		require.NoError(t, err)
	})
}

func TestExportsAndDelete(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, b *blob.Bucket) {
		ids, err := Exports(t.Context(), b, testMonth)
		require.NoError(t, err)
		assert.Empty(t, ids)

		export(t, b, "b-2", 100, oddRow, smallOpts)
		export(t, b, "a-1", 100, oddRow, smallOpts)
		// Another month's export, and an incomplete one (no manifest).
		ex, err := NewExporter(t.Context(), b, testMonth.AddDate(0, 1, 0), "a-1", ExportOptions{})
		require.NoError(t, err)
		_, err = ex.Close()
		require.NoError(t, err)
		require.NoError(t, b.WriteAll(t.Context(), key("incomplete", partName(0)), []byte("PAR1"), nil))

		ids, err = Exports(t.Context(), b, testMonth)
		require.NoError(t, err)
		assert.Equal(t, []string{"a-1", "b-2"}, ids)

		// An id in use, even by an incomplete export, is refused.
		_, err = NewExporter(t.Context(), b, testMonth, "a-1", ExportOptions{})
		require.ErrorIs(t, err, ErrExists)
		_, err = NewExporter(t.Context(), b, testMonth, "incomplete", ExportOptions{})
		require.ErrorIs(t, err, ErrExists)

		require.NoError(t, Delete(t.Context(), b, testMonth, "a-1"))
		require.NoError(t, Delete(t.Context(), b, testMonth, "incomplete"))
		require.NoError(t, Delete(t.Context(), b, testMonth, "never-existed"))
		assertEmpty(t, b, exportPrefix(testMonth, "a-1"))
		assertEmpty(t, b, exportPrefix(testMonth, "incomplete"))
		ids, err = Exports(t.Context(), b, testMonth)
		require.NoError(t, err)
		assert.Equal(t, []string{"b-2"}, ids)
		// The other month's export of the same id is untouched.
		_, err = Verify(t.Context(), b, testMonth.AddDate(0, 1, 0), "a-1")
		require.NoError(t, err)

		// After Delete the id can be used again.
		export(t, b, "a-1", 10, oddRow, smallOpts)
	})
}

func TestExportIDs(t *testing.T) {
	t.Parallel()
	b := openDirBucket(t)
	for _, id := range []string{"", ".", "..", "a/b", "../x", ".hidden", "a b", strings.Repeat("x", 129), "é"} {
		_, err := NewExporter(t.Context(), b, testMonth, id, ExportOptions{})
		assert.Error(t, err, "%q", id)
		_, err = ReadManifest(t.Context(), b, testMonth, id)
		assert.Error(t, err, "%q", id)
	}
	for _, id := range []string{"x", "0198c3a2-7f6e-7c4b-9d3e-2a1b0c9d8e7f", "20250401T020000Z", "a.b_c-d"} {
		ex, err := NewExporter(t.Context(), b, testMonth, id, ExportOptions{})
		require.NoError(t, err, "%q", id)
		ex.Abort()
	}
}

func TestMonthPrefix(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "operation_logs/2025-03/", MonthPrefix(testMonth))
	assert.Equal(t, "operation_logs/2025-03/", MonthPrefix(time.Date(2025, 3, 31, 23, 59, 59, 0, time.UTC)))
	// The month is the UTC one.
	est := time.FixedZone("EST", -5*3600)
	assert.Equal(t, "operation_logs/2025-04/", MonthPrefix(time.Date(2025, 3, 31, 20, 0, 0, 0, est)))
}

func TestOpenBucket(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "a", "b")
	for _, url := range []string{"file://" + dir, dir} {
		b, err := OpenBucket(ctx, url)
		require.NoError(t, err, url)
		require.NoError(t, b.WriteAll(ctx, "operation_logs/x", []byte("hi"), nil))
		require.NoError(t, b.Close())
		data, err := os.ReadFile(filepath.Join(dir, "operation_logs", "x"))
		require.NoError(t, err)
		assert.Equal(t, "hi", string(data))
	}
	entries, err := os.ReadDir(filepath.Join(dir, "operation_logs"))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no sidecar or temporary files")
	for _, url := range []string{"relative/dir", "file://relative/dir", "gs://bucket", "s3://", "file://" + dir + "?x=1", "s3://b?use_path_style=maybe"} {
		_, err := OpenBucket(ctx, url)
		assert.Error(t, err, url)
	}
}

func TestS3BucketWithEnvironmentCredentials(t *testing.T) {
	// Not parallel: it sets the process environment, as production does.
	srv := miniotest.Start(t)
	bucket := srv.Bucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	b, err := OpenBucket(t.Context(), srv.URL(bucket))
	require.NoError(t, err)
	defer b.Close()
	export(t, b, "env", 100, oddRow, ExportOptions{})
	_, err = Verify(t.Context(), b, testMonth, "env")
	require.NoError(t, err)

	// Wrong credentials are an error, not ErrCorrupt or ErrNotFound.
	bad, err := OpenBucketWith(t.Context(), srv.URL(bucket), Credentials{AccessKeyID: srv.AccessKey, SecretAccessKey: "wrong-secret"})
	require.NoError(t, err)
	defer bad.Close()
	_, err = Verify(t.Context(), bad, testMonth, "env")
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrCorrupt)
	assert.NotErrorIs(t, err, ErrNotFound)
}

// TestReadsSchemaVersion1 reads an export written by the version 1
// writer (testdata/v1, 300 oddRows in 2 files, committed when version 2
// replaced it): readers keep reading the versions before theirs.
func TestReadsSchemaVersion1(t *testing.T) {
	t.Parallel()
	const id, rows = "v1-fixture", 300
	wd, err := os.Getwd()
	require.NoError(t, err)
	fixture, err := OpenBucket(t.Context(), "file://"+filepath.Join(wd, "testdata", "v1"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = fixture.Close() })

	i := 0
	m, err := Read(t.Context(), fixture, testMonth, id, func(r *Row) error {
		require.Equal(t, oddRow(i, rows), r, "row %d", i)
		i++
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, rows, i)
	assert.Equal(t, 1, m.SchemaVersion)
	d := newTestDigest(t, 1)
	for i := range rows {
		d.Add(oddRow(i, rows))
	}
	assert.Equal(t, d.Sum(), m.Digest)

	// Version 1's order is still checked: files listed the other way round
	// are refused.
	b := openDirBucket(t)
	for _, name := range []string{"part-00000.parquet", "part-00001.parquet", manifestName} {
		data, err := fixture.ReadAll(t.Context(), exportPrefix(testMonth, id)+name)
		require.NoError(t, err)
		require.NoError(t, b.WriteAll(t.Context(), key(id, name), data, nil))
	}
	editManifest(t, b, id, func(m map[string]any) {
		fs := m["files"].([]any)
		fs[0], fs[1] = fs[1], fs[0]
	})
	requireCorrupt(t, b, id, "out of (create_time, id) order")
}
