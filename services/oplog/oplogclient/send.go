package oplogclient

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/wire"
)

// maxInternalAttempts bounds retries of errors that may be permanent
// (INTERNAL, UNKNOWN); transient ones (UNAVAILABLE, RESOURCE_EXHAUSTED,
// ABORTED, DEADLINE_EXCEEDED) are retried until Close gives up.
const maxInternalAttempts = 5

// outgoing is one Ingest message on its way: a batch from the memory
// buffer, or records replayed from the spool.
type outgoing struct {
	msg   []byte   // the encoded IngestRequest, resent as is
	rows  [][2]int // each row's encoding: msg[rows[i][0]:rows[i][1]]
	batch []record // from memory: the records (for spans and rejections)
	// from the spool: the records, handed back to it when done
	spooled []spooledRecord
	oldest  time.Time // when its oldest entry was logged
}

// encodeBatch encodes a memory batch as one IngestRequest holding every
// row (at most 1,000).
func encodeBatch(batch []record) *outgoing {
	o := &outgoing{msg: make([]byte, 0, len(batch)*256), rows: make([][2]int, len(batch)), batch: batch, oldest: batch[0].queued}
	for i := range batch {
		var at int
		o.msg, at = beginNested(o.msg, 1)
		start := len(o.msg)
		o.msg = appendLog(o.msg, &batch[i])
		n := len(o.msg) - start
		o.msg = endNested(o.msg, at) // moves the row to just after its length
		o.rows[i] = [2]int{len(o.msg) - n, len(o.msg)}
		if batch[i].queued.Before(o.oldest) {
			o.oldest = batch[i].queued
		}
	}
	return o
}

// encodeSpooled encodes records read from the spool as one IngestRequest.
func encodeSpooled(recs []spooledRecord) *outgoing {
	size := 0
	for _, r := range recs {
		size += len(r.row) + 8
	}
	o := &outgoing{msg: make([]byte, 0, size), rows: make([][2]int, len(recs)), spooled: recs, oldest: recs[0].loggedAt}
	for i, r := range recs {
		o.msg = protowire.AppendTag(o.msg, 1, protowire.BytesType)
		o.msg = protowire.AppendVarint(o.msg, uint64(len(r.row)))
		o.rows[i] = [2]int{len(o.msg), len(o.msg) + len(r.row)}
		o.msg = append(o.msg, r.row...)
		if r.loggedAt.Before(o.oldest) {
			o.oldest = r.loggedAt
		}
	}
	return o
}

func (o *outgoing) len() int { return len(o.rows) }

// flush delivers a batch from the memory buffer: with a spool, one
// attempt, and the spool takes the batch if it fails (or at once while
// the server is known to be down); without one, retries until the server
// acknowledges, the error is permanent, or Close gives up.
func (c *Client) flush(batch []record) {
	defer c.inFlight.Add(-int64(len(batch)))
	o := encodeBatch(batch)
	if c.spool != nil && c.down.Load() {
		c.toSpool(o)
		return
	}
	c.deliver(o)
}

// toSpool writes o's rows to the spool; the spool counts what it drops.
func (c *Client) toSpool(o *outgoing) {
	rows := make([][]byte, len(o.rows))
	logged := make([]time.Time, len(o.rows))
	for i, r := range o.rows {
		rows[i] = o.msg[r[0]:r[1]]
		logged[i] = o.batch[i].queued
	}
	_, _ = c.spool.write(rows, logged) // the spool counts what it writes and what it drops
}

// deliver sends o until it is acknowledged or given up on. A memory batch
// with a spool behind it goes there on its first transient failure; a
// spool replay stays in the spool when Close gives up.
func (c *Client) deliver(o *outgoing) {
	ctx, span := c.startFlushSpan(o)
	defer span.End()
	fromSpool := o.spooled != nil
	start := time.Now()
	backoff := c.opts.initialBackoff
	wokeLast := false
	for attempt := 1; ; attempt++ {
		resp, err := c.ingest(ctx, o.msg)
		if err == nil {
			c.down.Store(false)
			c.recordAck(o, resp, attempt, start)
			span.SetAttributes(attribute.Int("oplog.attempts", attempt), attribute.Int64("oplog.accepted", resp.GetAccepted()),
				attribute.Int64("oplog.duplicates", resp.GetDuplicates()), attribute.Int("oplog.rejected", len(resp.GetRejected())))
			return
		}
		code := status.Code(err)
		stopping := c.stopping.Err() != nil
		permanent := !stopping && !transient(code) && (!maybeTransient(code) || attempt >= maxInternalAttempts)
		switch {
		case !fromSpool && c.spool != nil && !permanent:
			c.down.Store(true)
			c.toSpool(o)
			span.SetStatus(otelcodes.Error, "spooled after "+code.String())
			return
		case permanent:
			c.failed.Add(int64(o.len()))
			if fromSpool {
				c.spool.done(o.spooled, 0)
			}
			span.SetStatus(otelcodes.Error, "gave up: "+code.String())
			return
		case stopping:
			if fromSpool {
				c.spool.release(o.spooled) // stays for the next start
			} else {
				c.failed.Add(int64(o.len()))
			}
			span.SetStatus(otelcodes.Error, "closed before delivery")
			return
		}
		wait := jitter(backoff)
		serverDelay := retryDelay(err)
		if serverDelay > wait {
			wait = serverDelay
		}
		// An answer of UNAVAILABLE means the server or its database is
		// down: the wait ends early when health says it is back, unless
		// the last early end was followed by another failure (then the
		// health check is not telling the whole story).
		outage := (code == codes.Unavailable || code == codes.DeadlineExceeded) && serverDelay == 0 && !wokeLast
		woke, stopped := c.waitRetry(wait, outage)
		if stopped {
			continue // the next attempt fails at once and ends up above
		}
		c.retries.Add(1)
		wokeLast = woke
		if woke {
			backoff = c.opts.initialBackoff
		} else {
			backoff = min(2*backoff, c.opts.maxBackoff)
		}
	}
}

// recordAck counts an acknowledged flush and reports it.
func (c *Client) recordAck(o *outgoing, resp *oplogv1.IngestResponse, attempts int, start time.Time) {
	acked := resp.GetAccepted() + resp.GetDuplicates()
	c.acknowledged.Add(acked)
	c.duplicates.Add(resp.GetDuplicates())
	c.rejected.Add(int64(len(resp.GetRejected())))
	if o.spooled != nil {
		c.spool.done(o.spooled, acked)
	}
	if c.opts.onRejected != nil {
		for _, r := range resp.GetRejected() {
			rej := Rejected{ID: r.GetId(), Field: r.GetField(), Reason: r.GetReason()}
			if i := int(r.GetIndex()); i >= 0 && i < o.len() {
				rej.OperationType = o.operationType(i)
			}
			c.opts.onRejected(rej)
		}
	}
	if c.opts.onFlush != nil {
		now := time.Now()
		c.opts.onFlush(FlushResult{
			Rows: o.len(), Accepted: int(resp.GetAccepted()), Duplicates: int(resp.GetDuplicates()),
			Rejected: len(resp.GetRejected()), Attempts: attempts, Latency: now.Sub(start),
			Delivery: now.Sub(o.oldest), FromSpool: o.spooled != nil,
		})
	}
}

// operationType is row i's operation type, read back from its encoding
// for a replayed row.
func (o *outgoing) operationType(i int) oplogv1.OperationType {
	if o.batch != nil {
		return o.batch[i].entry.OperationType
	}
	b := o.msg[o.rows[i][0]:o.rows[i][1]]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 4 && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(b)
			return oplogv1.OperationType(v)
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return 0
		}
		b = b[n:]
	}
	return 0
}

// healthProbeEvery is how often a retry's wait asks the server's health.
const healthProbeEvery = 200 * time.Millisecond

// waitRetry waits d. With watchHealth, it asks the server's health every
// healthProbeEvery and ends early (woke) when it answers SERVING: the
// outage that failed the attempt is over, whatever the backoff has grown
// to. stopped: Close gave up meanwhile.
func (c *Client) waitRetry(d time.Duration, watchHealth bool) (woke, stopped bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	var probe <-chan time.Time
	if watchHealth && d > healthProbeEvery {
		t := time.NewTicker(healthProbeEvery)
		defer t.Stop()
		probe = t.C
	}
	for probes := 0; ; {
		select {
		case <-timer.C:
			return false, false
		case <-c.stopping.Done():
			return false, true
		case <-probe:
			// While the server is down, gRPC waits longer and longer
			// between attempts to reconnect (up to two minutes by
			// default), and a probe on a connection waiting to reconnect
			// fails at once: without a nudge, a server that is back is
			// only seen at gRPC's next attempt. Every other probe asks
			// for an attempt now, so a server that is back is reached
			// within half a second or so.
			if probes%2 == 0 && c.reconnect != nil {
				c.reconnect.ResetConnectBackoff()
			}
			probes++
			if c.serving() {
				return true, false
			}
		}
	}
}

// serving asks the server's standard health service about OpLogService.
// A server without one (or unreachable) is not serving.
func (c *Client) serving() bool {
	ctx, cancel := context.WithTimeout(c.stopping, time.Second)
	defer cancel()
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: oplogv1.OpLogService_ServiceDesc.ServiceName})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// replayer sends the spool's records back to the server, in order, until
// Close: then until the spool is empty or Close gives up. Several run at
// once (as many as flushers), so a backlog drains at the rate the server
// takes it rather than one stream at a time.
func (c *Client) replayer() {
	flushed := c.flushed
	for c.stopping.Err() == nil {
		if recs := c.spool.next(c.opts.flushSize); len(recs) > 0 {
			c.deliver(encodeSpooled(recs))
			continue
		}
		if flushed == nil {
			return // Close: the flushers are done and the spool is read
		}
		select {
		case <-c.spool.ready:
		case <-flushed:
			flushed = nil // read what they spooled last, then stop
		case <-c.stopping.Done():
		}
	}
}

// maxFlushLinks bounds a flush span's links (the OpenTelemetry SDK keeps
// 128 by default).
const maxFlushLinks = 127

// startFlushSpan starts the span of one flush: in the trace of its first
// entry's operation (so a worker's trace shows its log being delivered
// and stored), linked to the operations of the others.
func (c *Client) startFlushSpan(o *outgoing) (context.Context, trace.Span) {
	parent := c.stopping
	batch := o.batch
	if batch == nil {
		// A replay: the spool keeps the rows' trace ids, not their spans.
		return c.opts.tracer.Start(parent, "oplogclient.flush",
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(attribute.Int("oplog.rows", o.len()), attribute.Bool("oplog.from_spool", true)))
	}
	if batch[0].span.IsValid() {
		parent = trace.ContextWithSpanContext(parent, batch[0].span)
	}
	var links []trace.Link
	seen := map[trace.SpanID]bool{batch[0].span.SpanID(): true}
	for i := 1; i < len(batch) && len(links) < maxFlushLinks; i++ {
		if sc := batch[i].span; sc.IsValid() && !seen[sc.SpanID()] {
			seen[sc.SpanID()] = true
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return c.opts.tracer.Start(parent, "oplogclient.flush",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("oplog.rows", len(batch))))
}

// ingest sends one encoded IngestRequest over a stream and waits for the
// acknowledgement. ctx carries the flush span and ends when Close gives up.
func (c *Client) ingest(ctx context.Context, msg []byte) (*oplogv1.IngestResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.attemptTimeout)
	defer cancel()
	opts := append([]grpc.CallOption{grpc.ForceCodecV2(wire.Codec{})}, c.opts.callOptions...)
	stream, err := c.rpc.Ingest(ctx, opts...)
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(&wire.Frame{Bytes: msg}); err != nil {
		// io.EOF means the server ended the stream: its status arrives
		// with the response.
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	return stream.CloseAndRecv()
}

func transient(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.DeadlineExceeded:
		return true
	}
	return false
}

func maybeTransient(c codes.Code) bool { return c == codes.Internal || c == codes.Unknown }

// jitter spreads retries of many workers: a random wait in [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// retryDelay is the server's google.rpc.RetryInfo delay, if it sent one.
func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// appendLog appends the fields of the OperationLog sent for a record:
// text sanitised by the rule of its kind (services/kit/validate), the
// same rule the server checks, so sloppy text is stored rather than
// refused; zero values left out, as proto3 encoders do.
func appendLog(b []byte, r *record) []byte {
	e := &r.entry
	str := func(num protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	varint := func(num protowire.Number, v uint64) {
		if v != 0 {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	message := func(num protowire.Number, m []byte) {
		if m != nil {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendBytes(b, m)
		}
	}
	var id [36]byte
	uuidString(id[:], r.id)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, id[:])
	str(2, e.UserID)
	str(3, validate.Identifier.Sanitize(e.PlatformAccountID))
	varint(4, uint64(e.OperationType))
	str(5, validate.Identifier.Sanitize(e.ResourceID))
	varint(6, uint64(e.Outcome))
	if e.ErrorCode != nil {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(*e.ErrorCode)))
	}
	str(8, validate.Code.Sanitize(e.ErrorType))
	str(9, validate.Message.Sanitize(e.ErrorMessage))
	if e.ExecutionTime > 0 {
		b = protowire.AppendTag(b, 10, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(min(e.ExecutionTime.Milliseconds(), wire.MaxExecutionTimeMs))) // sub-millisecond is 0
	}
	varint(11, uint64(min(max(e.RetryCount, 0), wire.MaxRetryCount)))
	varint(12, uint64(e.AuthTypeDetected))
	if e.SessionRefreshed {
		varint(13, 1)
	}
	str(14, validate.Identifier.Sanitize(e.ProxyUsed))
	str(15, validate.UserAgent.Sanitize(e.UserAgent))
	message(16, r.request)
	message(17, r.response)
	if r.span.HasTraceID() {
		var t [32]byte
		id := r.span.TraceID()
		hex.Encode(t[:], id[:])
		b = protowire.AppendTag(b, 18, protowire.BytesType)
		b = protowire.AppendBytes(b, t[:])
		if r.span.HasSpanID() {
			var s [16]byte
			id := r.span.SpanID()
			hex.Encode(s[:], id[:])
			b = protowire.AppendTag(b, 20, protowire.BytesType)
			b = protowire.AppendBytes(b, s[:])
		}
	}
	var ts int
	b, ts = beginNested(b, 19)
	varint(1, uint64(r.at.Unix()))
	varint(2, uint64(r.at.Nanosecond()))
	return endNested(b, ts)
}

// uuidString writes id in its canonical 36-character form into dst.
func uuidString(dst []byte, id [16]byte) {
	hex.Encode(dst[0:8], id[0:4])
	dst[8] = '-'
	hex.Encode(dst[9:13], id[4:6])
	dst[13] = '-'
	hex.Encode(dst[14:18], id[6:8])
	dst[18] = '-'
	hex.Encode(dst[19:23], id[8:10])
	dst[23] = '-'
	hex.Encode(dst[24:], id[10:])
}
