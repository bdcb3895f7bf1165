//go:build faults

package faults

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/internal/wire"
)

// key is a producer's own name for one entry: producer p's n-th Log call.
// It travels in the row's resource_id as "faults-p<p>-<n>".
type key struct {
	p int32
	n int32
}

func (k key) String() string { return fmt.Sprintf("faults-p%d-%d", k.p, k.n) }

// parseKey reads a resource_id written by key.String.
func parseKey(s string) (key, bool) {
	rest, ok := strings.CutPrefix(s, "faults-p")
	if !ok {
		return key{}, false
	}
	ps, ns, ok := strings.Cut(rest, "-")
	if !ok {
		return key{}, false
	}
	p, err1 := strconv.ParseInt(ps, 10, 32)
	n, err2 := strconv.ParseInt(ns, 10, 32)
	if err1 != nil || err2 != nil {
		return key{}, false
	}
	return key{int32(p), int32(n)}, true
}

type uuid16 = [16]byte

func parseUUID(s string) (uuid16, bool) {
	var u uuid16
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return u, false
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, false
	}
	return u, true
}

func formatUUID(u uuid16) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// wireRow is what the ledger needs of one row sent on the wire.
type wireRow struct {
	id  uuid16
	key key
	ok  bool // both parsed
}

// Ledger records, from the wire, which id each entry was sent with and
// which entries the server acknowledged.
type Ledger struct {
	mu    sync.Mutex
	sent  map[key]uuid16
	acked map[key]uuid16
	// rejected holds the keys of rows the server refused (none expected).
	rejected map[key]bool
	// anomalies are impossibilities seen on the wire: a key sent under two
	// ids, a row without a key, an answer whose counts do not add up.
	anomalies []string
	// ackTimes are the times of successful answers, for recovery times;
	// ackBy the producer each answered (of its first row; -1 if unknown).
	ackTimes []time.Time
	ackBy    []int32
	// ackedRows counts the rows of successful answers (a row acknowledged
	// twice counts twice); duplicates the server's duplicate counts.
	ackedRows, duplicates int64
	// errors counts failed Ingest attempts by gRPC code.
	errors map[string]int64
}

func newLedger() *Ledger {
	return &Ledger{sent: map[key]uuid16{}, acked: map[key]uuid16{}, rejected: map[key]bool{}, errors: map[string]int64{}}
}

func (l *Ledger) anomaly(format string, args ...any) {
	if len(l.anomalies) < 20 {
		l.anomalies = append(l.anomalies, fmt.Sprintf(format, args...))
	}
}

func (l *Ledger) noteSent(rows []wireRow) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range rows {
		if !r.ok {
			l.anomaly("a row without a parsable id or producer key was sent")
			continue
		}
		if old, ok := l.sent[r.key]; ok && old != r.id {
			l.anomaly("%s sent with id %s and later with %s", r.key, formatUUID(old), formatUUID(r.id))
		}
		l.sent[r.key] = r.id
	}
}

func (l *Ledger) noteAnswer(rows []wireRow, resp *oplogv1.IngestResponse) {
	l.mu.Lock()
	defer l.mu.Unlock()
	by := int32(-1)
	for _, r := range rows {
		if r.ok {
			by = r.key.p
			break
		}
	}
	l.ackTimes = append(l.ackTimes, time.Now())
	l.ackBy = append(l.ackBy, by)
	refused := map[string]bool{}
	for _, r := range resp.GetRejected() {
		refused[r.GetId()] = true
	}
	if got := resp.GetAccepted() + resp.GetDuplicates() + int64(len(resp.GetRejected())); got != int64(len(rows)) {
		l.anomaly("an answer counted %d rows (accepted %d, duplicates %d, rejected %d) for a stream of %d",
			got, resp.GetAccepted(), resp.GetDuplicates(), len(resp.GetRejected()), len(rows))
	}
	l.duplicates += resp.GetDuplicates()
	for _, r := range rows {
		if !r.ok {
			continue
		}
		if refused[formatUUID(r.id)] {
			l.rejected[r.key] = true
			continue
		}
		l.ackedRows++
		l.acked[r.key] = r.id
	}
}

func (l *Ledger) noteError(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors[status.Code(err).String()]++
}

// firstAckAfter is the time of the first acknowledgement after t, or the
// zero time when there has been none yet.
func (l *Ledger) firstAckAfter(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Appended under the lock with the monotonic clock: sorted.
	i := sort.Search(len(l.ackTimes), func(i int) bool { return l.ackTimes[i].After(t) })
	if i < len(l.ackTimes) {
		return l.ackTimes[i]
	}
	return time.Time{}
}

// firstAckAfterBy is, per producer, the time of its first acknowledgement
// after t (producers without one since are absent).
func (l *Ledger) firstAckAfterBy(t time.Time) map[int32]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int32]time.Time{}
	i := sort.Search(len(l.ackTimes), func(i int) bool { return l.ackTimes[i].After(t) })
	for ; i < len(l.ackTimes); i++ {
		if _, ok := out[l.ackBy[i]]; !ok {
			out[l.ackBy[i]] = l.ackTimes[i]
		}
	}
	return out
}

// ackCount is the number of successful answers so far.
func (l *Ledger) ackCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ackTimes)
}

// errorSummary is "Unavailable 12, Canceled 1", sorted by code name.
func (l *Ledger) errorSummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errors) == 0 {
		return "none"
	}
	var parts []string
	for code, n := range l.errors {
		parts = append(parts, fmt.Sprintf("%s %d", code, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// interceptor watches the Ingest streams of a connection: the rows of
// every message sent, and the answer. An answer that arrives is exactly
// what the SDK counts as acknowledged (its Ingest attempt returns the
// response without error).
func (l *Ledger) interceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if method != oplogv1.OpLogService_Ingest_FullMethodName {
			return s, err
		}
		if err != nil {
			l.noteError(err)
			return nil, err
		}
		return &ledgerStream{ClientStream: s, l: l}, nil
	}
}

type ledgerStream struct {
	grpc.ClientStream
	l    *Ledger
	rows []wireRow
}

func (s *ledgerStream) SendMsg(m any) error {
	var rows []wireRow
	switch m := m.(type) {
	case *wire.Frame: // the SDK's pre-encoded IngestRequest
		rows = parseIngestRequest(m.Bytes)
	case *oplogv1.IngestRequest: // raw clients of the generated stub
		for _, log := range m.GetLogs() {
			id, ok1 := parseUUID(log.GetId())
			k, ok2 := parseKey(log.GetResourceId())
			rows = append(rows, wireRow{id: id, key: k, ok: ok1 && ok2})
		}
	}
	s.rows = append(s.rows, rows...)
	s.l.noteSent(rows)
	return s.ClientStream.SendMsg(m)
}

func (s *ledgerStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.l.noteError(err)
		return err
	}
	if resp, ok := m.(*oplogv1.IngestResponse); ok {
		s.l.noteAnswer(s.rows, resp)
	}
	return nil
}

// parseIngestRequest reads id (1) and resource_id (5) of every log (1) of
// an encoded IngestRequest.
func parseIngestRequest(b []byte) []wireRow {
	var out []wireRow
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return append(out, wireRow{})
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return append(out, wireRow{})
			}
			out = append(out, parseLog(v))
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return append(out, wireRow{})
		}
		b = b[n:]
	}
	return out
}

func parseLog(b []byte) wireRow {
	var r wireRow
	var okID, okKey bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wireRow{}
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 5) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return wireRow{}
			}
			if num == 1 {
				r.id, okID = parseUUID(string(v))
			} else {
				r.key, okKey = parseKey(string(v))
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return wireRow{}
		}
		b = b[n:]
	}
	r.ok = okID && okKey
	return r
}
