package coldstore

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const benchRows = 200_000

// benchData is benchRows realistic rows and their size in the Digest's
// encoding (about the size of the column data, a proxy for the table's).
func benchData(b *testing.B) ([]*Row, int64) {
	rows := make([]*Row, benchRows)
	d, err := NewDigest(SchemaVersion)
	if err != nil {
		b.Fatal(err)
	}
	var raw int64
	for i := range rows {
		rows[i] = realisticRow(i)
		d.Add(rows[i])
		raw += int64(len(d.buf))
	}
	return rows, raw
}

// BenchmarkExport exports benchRows realistic rows to a local directory
// with the default options. MB/s is of the rows' data (Digest encoding);
// rows/s, parquet-B/row and parquet-MB/s are reported beside it.
func BenchmarkExport(b *testing.B) {
	rows, raw := benchData(b)
	ctx := context.Background()
	bucket, err := OpenBucket(ctx, filepath.Join(b.TempDir(), "cold"))
	require.NoError(b, err)
	defer bucket.Close()
	b.SetBytes(raw)
	b.ReportAllocs()
	b.ResetTimer()
	var stored int64
	start := time.Now()
	for i := 0; i < b.N; i++ {
		ex, err := NewExporter(ctx, bucket, testMonth, "bench-"+strconv.Itoa(i), ExportOptions{})
		require.NoError(b, err)
		for _, r := range rows {
			if err := ex.Write(r); err != nil {
				b.Fatal(err)
			}
		}
		m, err := ex.Close()
		require.NoError(b, err)
		stored = 0
		for _, f := range m.Files {
			stored += f.Bytes
		}
	}
	elapsed := time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(float64(benchRows)*float64(b.N)/elapsed, "rows/s")
	b.ReportMetric(float64(stored)/benchRows, "parquet-B/row")
	b.ReportMetric(float64(stored)*float64(b.N)/elapsed/1e6, "parquet-MB/s")
	b.ReportMetric(float64(raw)/benchRows, "raw-B/row")
}

// BenchmarkVerify reads back and verifies an export of benchRows rows.
func BenchmarkVerify(b *testing.B) {
	rows, raw := benchData(b)
	ctx := context.Background()
	bucket, err := OpenBucket(ctx, filepath.Join(b.TempDir(), "cold"))
	require.NoError(b, err)
	defer bucket.Close()
	ex, err := NewExporter(ctx, bucket, testMonth, "bench", ExportOptions{})
	require.NoError(b, err)
	for _, r := range rows {
		require.NoError(b, ex.Write(r))
	}
	_, err = ex.Close()
	require.NoError(b, err)
	rows = nil
	b.SetBytes(raw)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := Verify(ctx, bucket, testMonth, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/time.Since(start).Seconds(), "rows/s")
}
