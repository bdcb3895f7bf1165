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

// send delivers one batch, retrying with backoff until the server
// acknowledges it, the error is permanent, or Close gives up.
func (c *Client) send(batch []record) {
	defer c.inFlight.Add(-int64(len(batch)))
	// One IngestRequest holding the whole batch (at most 1,000 rows),
	// encoded once and resent as is.
	msg := make([]byte, 0, len(batch)*256)
	for i := range batch {
		var at int
		msg, at = beginNested(msg, 1)
		msg = appendLog(msg, &batch[i])
		msg = endNested(msg, at)
	}
	ctx, span := c.startFlushSpan(batch)
	defer span.End()
	start := time.Now()
	backoff := c.opts.initialBackoff
	for attempt := 1; ; attempt++ {
		resp, err := c.ingest(ctx, msg)
		if err == nil {
			span.SetAttributes(attribute.Int("oplog.attempts", attempt), attribute.Int64("oplog.accepted", resp.GetAccepted()),
				attribute.Int64("oplog.duplicates", resp.GetDuplicates()), attribute.Int("oplog.rejected", len(resp.GetRejected())))
			c.acknowledged.Add(resp.GetAccepted() + resp.GetDuplicates())
			c.duplicates.Add(resp.GetDuplicates())
			c.rejected.Add(int64(len(resp.GetRejected())))
			if c.opts.onRejected != nil {
				for _, r := range resp.GetRejected() {
					rej := Rejected{ID: r.GetId(), Field: r.GetField(), Reason: r.GetReason()}
					if i := int(r.GetIndex()); i >= 0 && i < len(batch) {
						rej.OperationType = batch[i].entry.OperationType
					}
					c.opts.onRejected(rej)
				}
			}
			if c.opts.onFlush != nil {
				c.opts.onFlush(FlushResult{
					Rows: len(batch), Accepted: int(resp.GetAccepted()), Duplicates: int(resp.GetDuplicates()),
					Rejected: len(resp.GetRejected()), Attempts: attempt, Latency: time.Since(start),
				})
			}
			return
		}
		code := status.Code(err)
		if !transient(code) && (!maybeTransient(code) || attempt >= maxInternalAttempts) {
			c.failed.Add(int64(len(batch)))
			span.SetStatus(otelcodes.Error, "gave up: "+code.String())
			return
		}
		wait := jitter(backoff)
		if d := retryDelay(err); d > wait {
			wait = d
		}
		backoff = min(2*backoff, c.opts.maxBackoff)
		select {
		case <-time.After(wait):
			c.retries.Add(1)
		case <-c.stopping.Done():
			c.failed.Add(int64(len(batch)))
			span.SetStatus(otelcodes.Error, "closed before delivery")
			return
		}
	}
}

// maxFlushLinks bounds a flush span's links (the OpenTelemetry SDK keeps
// 128 by default).
const maxFlushLinks = 127

// startFlushSpan starts the span of one flush: in the trace of its first
// entry's operation (so a worker's trace shows its log being delivered
// and stored), linked to the operations of the others.
func (c *Client) startFlushSpan(batch []record) (context.Context, trace.Span) {
	parent := c.stopping
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
		b = protowire.AppendVarint(b, uint64(min(e.ExecutionTime.Milliseconds(), 24*60*60*1000))) // sub-millisecond is 0
	}
	varint(11, uint64(min(max(e.RetryCount, 0), 10000)))
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
