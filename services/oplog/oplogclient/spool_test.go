package oplogclient

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func rowsOf(from, n int) ([][]byte, []time.Time) {
	rows := make([][]byte, n)
	at := make([]time.Time, n)
	for i := range rows {
		rows[i] = fmt.Appendf(nil, "row-%06d-%s", from+i, "padding to make a row look like a row of a log entry")
		at[i] = time.Unix(1_800_000_000, int64(from+i))
	}
	return rows, at
}

// drain reads and acknowledges everything readable, returning the rows.
func drain(t *testing.T, s *spool) []string {
	t.Helper()
	var got []string
	for {
		recs := s.next(7)
		if len(recs) == 0 {
			return got
		}
		for _, r := range recs {
			got = append(got, string(r.row))
		}
		s.done(recs, int64(len(recs)))
	}
}

func want(from, n int) []string {
	rows, _ := rowsOf(from, n)
	out := make([]string, n)
	for i, r := range rows {
		out[i] = string(r)
	}
	return out
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+spoolSuffix))
	require.NoError(t, err)
	return m
}

func TestSpoolHandsOutInOrderAndDeletesOnlyWhatIsDone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	require.NoError(t, err)
	s.segmentBytes = 4 << 10 // several segments
	for i := 0; i < 10; i++ {
		rows, at := rowsOf(i*50, 50)
		dropped, err := s.write(rows, at)
		require.NoError(t, err)
		require.Zero(t, dropped)
	}
	assert.Greater(t, len(segments(t, dir)), 3)
	assert.Equal(t, int64(500), s.stats().entries)
	assert.Equal(t, int64(500), s.stats().written)
	assert.Equal(t, time.Unix(1_800_000_000, 0), s.stats().oldest)

	// Handed out but not done with: nothing is deleted.
	recs := s.next(120)
	require.Len(t, recs, 120)
	files := len(segments(t, dir))
	assert.Equal(t, int64(500), s.stats().entries, "handed out is still spooled")
	s.done(recs[:60], 58) // two of them rejected
	assert.Equal(t, int64(440), s.stats().entries)
	assert.Equal(t, int64(58), s.stats().replayed, "replayed counts what the server acknowledged")
	s.done(recs[60:], int64(len(recs)-60))
	assert.Less(t, len(segments(t, dir)), files, "segments read and done with are deleted")

	got := drain(t, s)
	assert.Equal(t, want(120, 380), got, "in order, each once")
	assert.Empty(t, segments(t, dir), "a drained spool keeps no files")
	assert.Zero(t, s.stats().entries)
	assert.Zero(t, s.stats().bytes)

	// And it goes on working after being drained.
	rows, at := rowsOf(1000, 3)
	_, err = s.write(rows, at)
	require.NoError(t, err)
	assert.Equal(t, want(1000, 3), drain(t, s))
	s.close()
}

func TestSpoolKeepsWhatWasNotDoneForTheNextOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	require.NoError(t, err)
	s.segmentBytes = 4 << 10
	rows, at := rowsOf(0, 300)
	_, err = s.write(rows, at)
	require.NoError(t, err)
	recs := s.next(100)
	s.done(recs[:40], 40) // delivered
	s.release(recs[40:])
	s.close()

	s, err = openSpool(dir, 1<<20)
	require.NoError(t, err)
	defer s.close()
	// Segments are replayed whole: the 40 delivered may come again (the
	// server answers them as duplicates); nothing not delivered is missing.
	got := drain(t, s)
	assert.Subset(t, got, want(40, 260))
	assert.Equal(t, want(0, 300)[len(want(0, 300))-len(got):], got, "in order")
}

func TestSpoolIsOneClientPerDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	require.NoError(t, err)
	_, err = openSpool(dir, 1<<20)
	require.ErrorIs(t, err, errSpoolInUse)
	s.close()
	s, err = openSpool(dir, 1<<20)
	require.NoError(t, err, "free again once closed")
	s.close()
}

func TestFullSpoolDropsTheOldestAndStaysBounded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const limit = 64 << 10
	s, err := openSpool(dir, limit)
	require.NoError(t, err)
	defer s.close()
	s.segmentBytes = 8 << 10
	written := 0
	for i := 0; i < 100; i++ {
		rows, at := rowsOf(i*20, 20)
		_, err := s.write(rows, at)
		require.NoError(t, err)
		written += 20
		require.LessOrEqual(t, s.stats().bytes, int64(limit))
	}
	var onDisk int64
	for _, f := range segments(t, dir) {
		fi, err := os.Stat(f)
		require.NoError(t, err)
		onDisk += fi.Size()
	}
	assert.LessOrEqual(t, onDisk, int64(limit))
	dropped := s.dropped.Load()
	assert.Positive(t, dropped)
	got := drain(t, s)
	assert.Equal(t, written, int(dropped)+len(got), "every row is either kept or counted as dropped")
	assert.Equal(t, want(written-len(got), len(got)), got, "what was dropped is the oldest")

	// A batch larger than the whole spool is dropped, counted, alone.
	big := [][]byte{make([]byte, limit)}
	n, err := s.write(big, []time.Time{time.Now()})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// corrupt writes 3 segments of 10 rows, damages them with f, and returns
// what a fresh spool on the directory reads, and its corrupt count.
func corrupt(t *testing.T, f func(paths []string)) ([]string, int64) {
	t.Helper()
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		s.segmentBytes = 1 // each write starts a new segment
		rows, at := rowsOf(i*10, 10)
		_, err := s.write(rows, at)
		require.NoError(t, err)
	}
	s.close()
	paths := segments(t, dir)
	require.Len(t, paths, 3)
	f(paths)
	s, err = openSpool(dir, 1<<20)
	require.NoError(t, err)
	defer s.close()
	got := drain(t, s)
	return got, s.corrupt.Load()
}

func modify(t *testing.T, path string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, f(b), 0o600))
}

// recordAt is the offset of the i-th record of a segment of rowsOf rows
// (they all have the same length).
func recordAt(i int) int {
	rows, _ := rowsOf(0, 1)
	return len(spoolMagic) + i*(recordHeader+loggedAtBytes+len(rows[0]))
}

func TestDamagedSpoolIsSkippedAndCountedNeverSent(t *testing.T) {
	t.Parallel()
	all := want(0, 30)
	without := func(skip ...string) []string {
		var out []string
		for _, r := range all {
			keep := true
			for _, s := range skip {
				keep = keep && r != s
			}
			if keep {
				out = append(out, r)
			}
		}
		return out
	}
	t.Run("a flipped byte in a row", func(t *testing.T) {
		t.Parallel()
		got, n := corrupt(t, func(p []string) {
			modify(t, p[1], func(b []byte) []byte { b[recordAt(4)+recordHeader+loggedAtBytes+3] ^= 0x20; return b })
		})
		assert.Equal(t, without(all[14]), got, "only the damaged record is lost")
		assert.Equal(t, int64(1), n)
	})
	t.Run("a flipped byte in a length", func(t *testing.T) {
		t.Parallel()
		got, n := corrupt(t, func(p []string) {
			modify(t, p[1], func(b []byte) []byte { b[recordAt(6)+1] ^= 0x40; return b })
		})
		assert.Equal(t, without(all[16:20]...), got, "the rest of that segment cannot be trusted")
		assert.Equal(t, int64(1), n)
	})
	t.Run("a truncated tail", func(t *testing.T) {
		t.Parallel()
		got, n := corrupt(t, func(p []string) {
			modify(t, p[2], func(b []byte) []byte { return b[:recordAt(9)+5] })
		})
		assert.Equal(t, without(all[29]), got)
		assert.Equal(t, int64(1), n)
	})
	t.Run("a truncated checksum", func(t *testing.T) {
		t.Parallel()
		got, n := corrupt(t, func(p []string) {
			modify(t, p[0], func(b []byte) []byte {
				// A length that runs past the end of the file.
				binary.BigEndian.PutUint32(b[recordAt(2):], 1<<20)
				return b
			})
		})
		assert.Equal(t, all[:2], got[:2])
		assert.Equal(t, all[10:], got[2:])
		assert.Equal(t, int64(1), n)
	})
	t.Run("not a segment at all", func(t *testing.T) {
		t.Parallel()
		got, n := corrupt(t, func(p []string) {
			modify(t, p[0], func(b []byte) []byte { return []byte("garbage") })
		})
		assert.Equal(t, all[10:], got)
		assert.Equal(t, int64(1), n)
	})
	t.Run("an empty file", func(t *testing.T) {
		t.Parallel()
		got, n := corrupt(t, func(p []string) {
			modify(t, p[2], func([]byte) []byte { return nil })
		})
		assert.Equal(t, all[:20], got)
		assert.Equal(t, int64(1), n)
	})
}
