package oplogclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The spool keeps entries on disk while the server cannot take them: an
// append-only queue of segment files in one directory.
//
// A segment is the 8-byte magic, then records:
//
//	length  uint32, big endian: the bytes of the body
//	crc     uint32, big endian: CRC-32C of the body
//	body    logged-at (int64 Unix nanoseconds, big endian), then the
//	        entry's OperationLog encoding, exactly as it is sent
//
// Why segment files and not an embedded database (bbolt) or a ready-made
// disk queue (nsq's go-diskqueue): entries are only ever appended and then
// read once in order, so files of records are all the structure needed, and
// both requirements that matter most are simple with them and awkward with
// the others. A record is deleted only once the server acknowledged it:
// a segment file is removed when every record in it was acknowledged (or
// given up on), whereas go-diskqueue advances its read position as it
// hands records out, before any acknowledgement. And corruption must be
// survivable: a checksum per record lets a reader skip a damaged record
// (or, when a length itself is damaged, the rest of its segment) and count
// it, while bbolt trusts its pages and can panic on a damaged file.
//
// Durability: each write of a batch of records is followed by fsync before
// it counts as spooled and before the entries leave memory, so a kill -9
// or a power cut loses nothing that was spooled. A torn write at the end
// of a segment (a crash during the write) fails its checksum or its length
// and is skipped on the next start: those entries had not been spooled.
// The cost is one fsync per batch (up to the flush size, 500 entries by
// default), not per entry.
//
// Delivery is at least once: after a crash the segments are replayed from
// their start, including records acknowledged before it; the server stores
// each id once and answers the rest as duplicates.
type spool struct {
	dir          string
	maxBytes     int64
	segmentBytes int64
	lock         *os.File // holds an flock on dir/lock: one client per directory

	mu      sync.Mutex
	segs    []*segment // oldest first
	active  *os.File   // the last segment's file, open for appending; nil when none is
	total   int64      // bytes in segment files
	nextSeq uint64
	closed  bool

	// The reader's position: the segment it reads and where.
	rseg  *segment
	rfile *os.File
	roff  int64

	// ready is signalled after every write, for the replayer.
	ready chan struct{}
	// handedOut: records handed out by next and not yet done with or
	// released, also of segments dropped meanwhile.
	handedOut int

	// written and replayed are kept under mu with the segments, so that
	// stats never shows an entry in the spool that is not yet counted as
	// written, or one both replayed and still waiting.
	written, replayed int64

	dropped, corrupt atomic.Int64
}

type segment struct {
	seq  uint64
	path string
	// size is what was written and synced; the reader reads no further.
	size   int64
	sealed bool // no more writes: the reader may finish it
	// unread: records not yet handed to the reader; pending: handed out
	// and not yet done with; kept: handed out, not delivered, and left
	// for the next start.
	unread, pending, kept int
	readDone              bool // the reader reached the end of a sealed segment
	removed               bool
	firstAt               time.Time // when the first record in it was logged
}

type spooledRecord struct {
	seg      *segment
	loggedAt time.Time
	row      []byte // the OperationLog encoding
}

const (
	spoolMagic     = "PLOGSPL1"
	spoolSuffix    = ".seg"
	recordHeader   = 8
	loggedAtBytes  = 8
	maxRecordBody  = 4 << 20
	readChunkBytes = 256 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errSpoolInUse = errors.New("the spool directory is in use by another client")

// openSpool opens (creating it if needed) the spool in dir, bounded to
// maxBytes of segment files, and counts the records left by a previous
// run: they are read first.
func openSpool(dir string, maxBytes int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, errSpoolInUse)
		}
		return nil, err
	}
	s := &spool{
		dir: dir, maxBytes: maxBytes, lock: lock, ready: make(chan struct{}, 1),
		// Small enough that dropping the oldest segment when full frees
		// little more than needed, large enough to keep files few.
		segmentBytes: min(max(maxBytes/16, 64<<10), 16<<20),
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	for _, e := range names {
		name := e.Name()
		if !strings.HasSuffix(name, spoolSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, spoolSuffix), 16, 64)
		if err != nil {
			continue // not ours
		}
		seg := &segment{seq: seq, path: filepath.Join(dir, name), sealed: true}
		if err := seg.scan(); err != nil {
			_ = lock.Close()
			return nil, fmt.Errorf("spool segment %s: %w", name, err)
		}
		s.segs = append(s.segs, seg)
		s.total += seg.size
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return cmpUint(a.seq, b.seq) })
	return s, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// scan counts a segment's records from a previous run by their framing
// alone (checksums are checked when they are read) and notes when its
// first record was logged.
func (seg *segment) scan() error {
	f, err := os.Open(seg.path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	seg.size = fi.Size()
	var hdr [recordHeader + loggedAtBytes]byte
	for off := int64(len(spoolMagic)); off+recordHeader <= seg.size; {
		if _, err := f.ReadAt(hdr[:], off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		n := int64(binary.BigEndian.Uint32(hdr[0:4]))
		if n < loggedAtBytes || n > maxRecordBody || off+recordHeader+n > seg.size {
			break // damaged framing or a torn tail: the reader counts it
		}
		if seg.unread == 0 {
			seg.firstAt = time.Unix(0, int64(binary.BigEndian.Uint64(hdr[recordHeader:])))
		}
		seg.unread++
		off += recordHeader + n
	}
	return nil
}

// encodeRecords frames rows for a segment.
func encodeRecords(rows [][]byte, loggedAt []time.Time) []byte {
	n := 0
	for _, r := range rows {
		n += recordHeader + loggedAtBytes + len(r)
	}
	buf := make([]byte, 0, n)
	for i, r := range rows {
		start := len(buf)
		buf = binary.BigEndian.AppendUint32(buf, uint32(loggedAtBytes+len(r)))
		buf = append(buf, 0, 0, 0, 0)
		buf = binary.BigEndian.AppendUint64(buf, uint64(loggedAt[i].UnixNano()))
		buf = append(buf, r...)
		binary.BigEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+recordHeader:], castagnoli))
	}
	return buf
}

// write appends rows to the spool and syncs them to disk. When the spool
// would grow past its bound, whole segments are dropped, oldest first, and
// their unread records counted. It returns how many of rows were dropped
// instead of written (all of them when the write failed).
func (s *spool) write(rows [][]byte, loggedAt []time.Time) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	buf := encodeRecords(rows, loggedAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.dropped.Add(int64(len(rows)))
		return len(rows), errors.New("spool closed")
	}
	need := int64(len(buf))
	if need+int64(len(spoolMagic)) > s.maxBytes {
		s.dropped.Add(int64(len(rows)))
		return len(rows), nil
	}
	for s.total+need > s.maxBytes && len(s.segs) > 0 {
		s.dropSegment(s.segs[0])
	}
	last := s.last()
	if s.active == nil || last.size+need > s.segmentBytes {
		if err := s.rotate(); err != nil {
			s.dropped.Add(int64(len(rows)))
			return len(rows), err
		}
		last = s.last()
	}
	_, err := s.active.Write(buf)
	if err == nil {
		err = s.active.Sync()
	}
	if err != nil {
		// What reached the file may be partial: seal the segment at its
		// last good size, so nothing is ever appended after a torn write.
		_ = s.active.Truncate(last.size)
		s.sealActive()
		s.dropped.Add(int64(len(rows)))
		return len(rows), err
	}
	if last.unread == 0 && last.pending == 0 && last.firstAt.IsZero() {
		last.firstAt = loggedAt[0]
	}
	last.size += need
	last.unread += len(rows)
	s.total += need
	s.written += int64(len(rows))
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return 0, nil
}

func (s *spool) last() *segment {
	if len(s.segs) == 0 {
		return nil
	}
	return s.segs[len(s.segs)-1]
}

// rotate seals the active segment and starts a new one.
func (s *spool) rotate() error {
	s.sealActive()
	seg := &segment{seq: s.nextSeq, path: filepath.Join(s.dir, fmt.Sprintf("%016x%s", s.nextSeq, spoolSuffix))}
	f, err := os.OpenFile(seg.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(spoolMagic)); err != nil {
		_ = f.Close()
		_ = os.Remove(seg.path)
		return err
	}
	// The new file's directory entry must survive a crash too, or its
	// synced records could vanish with it.
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	s.nextSeq++
	seg.size = int64(len(spoolMagic))
	s.segs = append(s.segs, seg)
	s.total += seg.size
	s.active = f
	return nil
}

func (s *spool) sealActive() {
	if s.active == nil {
		return
	}
	_ = s.active.Close()
	s.active = nil
	last := s.last()
	last.sealed = true
	s.removeIfDone(last)
}

// dropSegment removes a segment to make room; its unread records are
// counted as dropped (those handed out may still be delivered).
func (s *spool) dropSegment(seg *segment) {
	if seg == s.last() && s.active != nil {
		_ = s.active.Close()
		s.active = nil
		seg.sealed = true
	}
	s.dropped.Add(int64(seg.unread))
	seg.unread = 0
	seg.readDone = true
	s.remove(seg)
}

func (s *spool) remove(seg *segment) {
	if seg.removed {
		return
	}
	seg.removed = true
	if s.rseg == seg {
		s.closeReader()
	}
	_ = os.Remove(seg.path)
	s.total -= seg.size
	s.segs = slices.DeleteFunc(s.segs, func(x *segment) bool { return x == seg })
}

// removeIfDone removes a segment whose every record was read and done
// with: a sealed one once read to its end; the active one as soon as the
// reader caught up with it, so a drained spool holds no files.
func (s *spool) removeIfDone(seg *segment) {
	if seg.removed || seg.pending > 0 || seg.unread > 0 || seg.kept > 0 {
		return
	}
	switch {
	case seg.sealed && seg.readDone:
	case !seg.sealed && s.rseg == seg && s.roff == seg.size:
		_ = s.active.Close()
		s.active = nil
		seg.sealed = true
	default:
		return
	}
	s.remove(seg)
}

func (s *spool) closeReader() {
	if s.rfile != nil {
		_ = s.rfile.Close()
	}
	s.rseg, s.rfile, s.roff = nil, nil, 0
}

// next hands out up to limit records in order, and nil when there are none
// to read now. Damaged records are skipped and counted, never returned.
func (s *spool) next(limit int) []spooledRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []spooledRecord
	for len(out) < limit && !s.closed {
		if s.rseg == nil {
			i := slices.IndexFunc(s.segs, func(seg *segment) bool { return !seg.readDone })
			if i < 0 {
				break
			}
			f, err := os.Open(s.segs[i].path)
			if err != nil {
				// Unreadable: nothing in it can be delivered.
				s.corrupt.Add(1)
				s.finishRead(s.segs[i])
				continue
			}
			s.rseg, s.rfile, s.roff = s.segs[i], f, 0
		}
		seg := s.rseg
		if s.roff == 0 {
			var magic [len(spoolMagic)]byte
			if _, err := s.rfile.ReadAt(magic[:], 0); err != nil || string(magic[:]) != spoolMagic {
				s.corrupt.Add(1)
				s.finishRead(seg)
				continue
			}
			s.roff = int64(len(spoolMagic))
		}
		if s.roff >= seg.size {
			if !seg.sealed {
				break // caught up with the segment being written
			}
			s.finishRead(seg)
			continue
		}
		got, ok := s.readRecords(seg, limit-len(out))
		out = append(out, got...)
		if !ok {
			// The framing is damaged: nothing after this point of the
			// segment can be trusted.
			s.corrupt.Add(1)
			s.finishRead(seg)
		}
	}
	return out
}

// readRecords reads whole records from the reader's position, up to limit
// and about a chunk of bytes. It returns false when the framing is
// damaged; a record whose checksum fails is skipped and counted alone.
func (s *spool) readRecords(seg *segment, limit int) ([]spooledRecord, bool) {
	avail := seg.size - s.roff
	if avail < recordHeader {
		return nil, false // a torn tail
	}
	var hdr [recordHeader]byte
	if _, err := s.rfile.ReadAt(hdr[:], s.roff); err != nil {
		return nil, false
	}
	first := int64(binary.BigEndian.Uint32(hdr[0:4]))
	if first < loggedAtBytes || first > maxRecordBody || recordHeader+first > avail {
		return nil, false
	}
	buf := make([]byte, min(avail, max(readChunkBytes, recordHeader+first)))
	if _, err := s.rfile.ReadAt(buf, s.roff); err != nil && !errors.Is(err, io.EOF) {
		return nil, false
	}
	var out []spooledRecord
	for len(out) < limit && len(buf) >= recordHeader {
		n := int64(binary.BigEndian.Uint32(buf[0:4]))
		if n < loggedAtBytes || n > maxRecordBody {
			return out, false
		}
		if int64(len(buf)) < recordHeader+n {
			if s.roff+recordHeader+n > seg.size {
				return out, false
			}
			break // the rest is in the next chunk
		}
		crc := binary.BigEndian.Uint32(buf[4:8])
		body := buf[recordHeader : recordHeader+n]
		s.roff += recordHeader + n
		buf = buf[recordHeader+n:]
		seg.unread = max(seg.unread-1, 0)
		if crc32.Checksum(body, castagnoli) != crc {
			s.corrupt.Add(1)
			continue
		}
		seg.pending++
		s.handedOut++
		out = append(out, spooledRecord{
			seg:      seg,
			loggedAt: time.Unix(0, int64(binary.BigEndian.Uint64(body))),
			row:      body[loggedAtBytes:],
		})
	}
	return out, true
}

// finishRead marks seg read to its end (what was not read is lost to
// damage) and removes it when nothing of it is still being delivered.
func (s *spool) finishRead(seg *segment) {
	seg.readDone = true
	seg.unread = 0
	if s.rseg == seg {
		s.closeReader()
	}
	s.removeIfDone(seg)
}

// done is called for records handed out by next once they are
// acknowledged or given up on: their segment goes when all of it is done.
// acknowledged is how many of them the server acknowledged.
func (s *spool) done(recs []spooledRecord, acknowledged int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replayed += acknowledged
	for _, r := range recs {
		r.seg.pending--
		s.handedOut--
		if r.seg.pending == 0 {
			s.removeIfDone(r.seg)
		}
	}
}

// release puts records handed out but not delivered back: they stay in
// their segment for the next start (a segment is read from its beginning).
func (s *spool) release(recs []spooledRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		r.seg.pending--
		s.handedOut--
		if !r.seg.removed {
			r.seg.kept++ // a dropped segment's are gone with it
		}
	}
}

type spoolStats struct {
	entries, bytes    int64
	written, replayed int64
	oldest            time.Time
}

func (s *spool) stats() spoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := spoolStats{entries: int64(s.handedOut), written: s.written, replayed: s.replayed}
	for _, seg := range s.segs {
		n := int64(seg.unread + seg.pending + seg.kept)
		st.entries += int64(seg.unread + seg.kept)
		if n > 0 && st.oldest.IsZero() {
			st.oldest = seg.firstAt
		}
	}
	st.bytes = s.total
	return st
}

// close stops reading and writing; what is left stays for the next start.
func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.active != nil {
		_ = s.active.Close()
		s.active = nil
		s.last().sealed = true
	}
	for _, seg := range slices.Clone(s.segs) {
		if seg.unread == 0 && seg.pending == 0 && seg.kept == 0 {
			s.remove(seg)
		}
	}
	s.closeReader()
	s.closed = true
	_ = s.lock.Close() // releases the flock
}
