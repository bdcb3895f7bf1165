// Package relay forwards the login outcomes of the operation log to
// ProfileService: it reads oplog.login_outbox oldest first, delivers in
// batches through BatchRecordLoginResults (event_id = the log row's id),
// and deletes what ProfileService applied. One replica delivers at a time
// (a session advisory lock); the others stand by and take over when its
// connection ends. A crash between delivery and deletion resends entries
// that ProfileService recognises by event_id, so nothing is counted twice
// and nothing acknowledged by the log is lost. After a failed delivery the
// relay backs off, but resends as soon as a ProfileService that was down
// answers its health check again.
package relay

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// Config tunes the relay.
type Config struct {
	// BatchSize is the number of outcomes per call (1-1000).
	BatchSize int
	// PollInterval is how often an empty outbox is looked at again.
	PollInterval time.Duration
	// StandbyInterval is how often a replica that does not deliver tries
	// to take over.
	StandbyInterval time.Duration
	// InitialBackoff and MaxBackoff bound the waits after failed calls.
	InitialBackoff, MaxBackoff time.Duration
	// HealthProbe is how often the relay asks ProfileService's health
	// while it waits after a failed delivery, and how long one answer may
	// take. Once ProfileService, found unreachable or NOT_SERVING during
	// such waits, answers SERVING, the relay stops waiting and resends at
	// once with its backoff back at InitialBackoff: a backoff that grew
	// during an outage does not delay the recovery. A ProfileService that
	// answers SERVING all along but fails deliveries gets the full
	// backoff. 0: no probes; every backoff is waited out.
	HealthProbe time.Duration
	// CallTimeout bounds one call to ProfileService.
	CallTimeout time.Duration
}

// maxLinks bounds the span links of one delivery (OpenTelemetry's SDK
// keeps 128 by default and drops the rest).
const maxLinks = 128

var tracer = otel.Tracer("github.com/platforma/platforma/services/oplog/internal/relay")

// Relay delivers the outbox.
type Relay struct {
	store   *store.Store
	profile profilev1.ProfileServiceClient
	health  healthgrpc.HealthClient
	cfg     Config
	log     *slog.Logger

	delivered    prometheus.Counter
	deadLettered *prometheus.CounterVec
	failures     prometheus.Counter
	backlog      *metrics.Polled
}

// New returns a relay that delivers st's outbox to ProfileService over
// conn, and asks ProfileService's health over the same connection: its
// answers are about the path the deliveries take.
func New(st *store.Store, conn grpc.ClientConnInterface, cfg Config, log *slog.Logger) *Relay {
	ns := metrics.Namespace
	backlog := prometheus.NewDesc(ns+"_login_outbox_backlog",
		"Login outcomes stored in the log and not yet applied by ProfileService. Read from the database: every replica reports the same value, aggregate with max.",
		nil, nil)
	age := prometheus.NewDesc(ns+"_login_outbox_oldest_age_seconds",
		"Age of the oldest login outcome waiting for ProfileService; 0 when none waits.", nil, nil)
	deadLetters := prometheus.NewDesc(ns+"_login_dead_letters",
		"Login outcomes ProfileService refused for good, kept for an operator (ListLoginDeadLetters). Read from the database: aggregate with max.",
		nil, nil)
	return &Relay{
		store:   st,
		profile: profilev1.NewProfileServiceClient(conn),
		health:  healthgrpc.NewHealthClient(conn),
		cfg:     cfg,
		log:     log,
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "login_outbox_delivered_total",
			Help: "Login outcomes ProfileService applied (or recognised as already applied).",
		}),
		deadLettered: deadLetteredCounter(),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "login_outbox_delivery_errors_total",
			Help: "Delivery calls that failed and will be retried.",
		}),
		backlog: metrics.NewPolled(5*time.Second, log, func(ctx context.Context) ([]metrics.Sample, error) {
			b, err := st.OutboxBacklog(ctx)
			if err != nil {
				return nil, err
			}
			return []metrics.Sample{
				{Desc: backlog, Value: float64(b.Waiting)},
				{Desc: age, Value: b.Oldest.Seconds()},
				{Desc: deadLetters, Value: float64(b.DeadLetters)},
			}, nil
		}, backlog, age, deadLetters),
	}
}

// Collectors are the relay's metrics.
func (r *Relay) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.delivered, r.deadLettered, r.failures, r.backlog}
}

// Run delivers while this replica holds the relay lock, and stands by
// while another one does, until ctx ends.
func (r *Relay) Run(ctx context.Context) {
	for {
		conn, err := r.store.LockRelay(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn("login relay: cannot reach the database; retrying", "error", err)
		case conn != nil:
			r.log.Info("login relay: this replica delivers login outcomes to ProfileService")
			r.lead(ctx, conn)
			conn.Close()
			if ctx.Err() == nil {
				r.log.Warn("login relay: lost its database connection, and with it the relay lock; trying again")
			}
		}
		if !sleep(ctx, r.cfg.StandbyInterval) {
			return
		}
	}
}

// lead delivers until ctx ends or the relay connection fails.
func (r *Relay) lead(ctx context.Context, conn *store.RelayConn) {
	backoff := r.cfg.InitialBackoff
	// down: a health probe found ProfileService unreachable or not
	// serving since the last whole batch or the last wake. Only then does
	// SERVING mean it is back; otherwise it was serving all along.
	down := false
	for ctx.Err() == nil {
		entries, err := conn.Pending(ctx, r.cfg.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("login relay: reading the outbox failed", "error", err)
			}
			return
		}
		if len(entries) == 0 {
			if !sleep(ctx, r.cfg.PollInterval) {
				return
			}
			continue
		}
		done, ok := r.deliverBatch(ctx, conn, entries, backoff)
		if !ok {
			return
		}
		if done == len(entries) {
			backoff, down = r.cfg.InitialBackoff, false
			continue
		}
		// Some entries are still waiting (a failed call, or items
		// ProfileService could not apply yet): back off before resending.
		woke, ok := r.backOff(ctx, jitter(backoff), &down)
		if !ok {
			return
		}
		if woke {
			r.log.Info("login relay: ProfileService is serving again; resuming", "backoff", backoff.String())
			backoff = r.cfg.InitialBackoff
			continue
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
	}
}

// backOff waits d, asking ProfileService's health every HealthProbe
// meanwhile. It returns early, woke, when ProfileService answers SERVING
// after a probe had found it down (*down, which it updates); ok is false
// when ctx ended.
func (r *Relay) backOff(ctx context.Context, d time.Duration, down *bool) (woke, ok bool) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		// A probe cut short by the deadline would say nothing; the rest
		// of the wait is slept.
		if r.cfg.HealthProbe <= 0 || left < r.cfg.HealthProbe {
			return false, sleep(ctx, left)
		}
		began := time.Now()
		switch r.probe(ctx) {
		case healthServing:
			if *down {
				*down = false
				return true, true
			}
		case healthDown:
			*down = true
		}
		if !sleep(ctx, r.cfg.HealthProbe-time.Since(began)) {
			return false, false
		}
	}
}

// probeResult is what a health probe learnt about ProfileService.
type probeResult int

const (
	// healthUnknown: no answer in time, or an error that says nothing
	// about an outage. A slow answer is no sign of one, and a wake after
	// it would let an overloaded ProfileService skip the backoff meant to
	// spare it.
	healthUnknown probeResult = iota
	healthServing
	// healthDown: unreachable (the connection is down or refused), or it
	// answered that it is not serving.
	healthDown
)

// probe asks ProfileService's health, waiting at most HealthProbe. While
// the connection is down the call fails at once (UNAVAILABLE); gRPC
// reconnects in the background, and the first probe after it has
// succeeded gets through.
func (r *Relay) probe(ctx context.Context) probeResult {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.HealthProbe)
	defer cancel()
	resp, err := r.health.Check(ctx, &healthgrpc.HealthCheckRequest{Service: profileService})
	switch {
	case err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING:
		return healthServing
	case err == nil, status.Code(err) == codes.Unavailable:
		return healthDown
	default:
		return healthUnknown
	}
}

// profileService is the name ProfileService's health is reported under.
var profileService = profilev1.ProfileService_ServiceDesc.ServiceName

// deliverBatch delivers entries and, in one span, deletes those applied
// and moves those refused for good to the dead letters. It returns how
// many entries are done with, and false when the relay connection failed
// (or shutdown began).
func (r *Relay) deliverBatch(ctx context.Context, conn *store.RelayConn, entries []store.OutboxEntry, backoff time.Duration) (int, bool) {
	ctx, span := tracer.Start(ctx, "oplog.login_relay.deliver",
		trace.WithNewRoot(), // its own trace, linked to the rows' traces
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links(entries)...),
		trace.WithAttributes(attribute.Int("oplog.login_outcomes", len(entries))))
	defer span.End()

	delivered, refused, err := r.deliver(ctx, span, entries)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, "delivery failed")
		if ctx.Err() != nil {
			return 0, false
		}
		r.failures.Inc()
		r.log.WarnContext(ctx, "login relay: delivery failed; retrying", "entries", len(entries), "retry_in", backoff.String(), "error", err)
	}
	done := len(delivered) + len(refused)
	if done == 0 {
		return 0, true
	}
	// Delivered is delivered: finish even when shutdown has begun, or the
	// next leader resends (harmless, but wasted).
	finCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := conn.Finish(finCtx, delivered, refused); err != nil {
		r.log.WarnContext(ctx, "login relay: removing delivered entries failed; they will be resent", "error", err)
		return 0, false
	}
	r.delivered.Add(float64(len(delivered)))
	for _, ref := range refused {
		r.deadLettered.WithLabelValues(deadLetterLabel(ref)).Inc()
	}
	return done, true
}

// deliver sends one batch and returns the sequence numbers of the entries
// ProfileService applied, and the entries it refused for good.
func (r *Relay) deliver(ctx context.Context, span trace.Span, entries []store.OutboxEntry) ([]int64, []store.Refusal, error) {
	req := &profilev1.BatchRecordLoginResultsRequest{Requests: make([]*profilev1.RecordLoginResultRequest, len(entries))}
	for i, e := range entries {
		outcome := commonv1.Outcome_OUTCOME_FAILED
		if e.Success {
			outcome = commonv1.Outcome_OUTCOME_SUCCESS
		}
		req.Requests[i] = &profilev1.RecordLoginResultRequest{
			EventId:           uuid.UUID(e.EventID).String(),
			UserId:            uuid.UUID(e.UserID).String(),
			PlatformAccountId: e.PlatformAccountID,
			Outcome:           outcome,
			AuthType:          commonv1.AuthType(e.AuthType),
			OccurredAt:        timestamppb.New(e.OccurredAt),
		}
	}
	callCtx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	resp, err := r.profile.BatchRecordLoginResults(callCtx, req)
	if err == nil && len(resp.GetResults()) != len(entries) {
		err = fmt.Errorf("ProfileService answered %d results for %d outcomes", len(resp.GetResults()), len(entries))
	}
	if err != nil {
		return nil, nil, err
	}
	var delivered []int64
	var refused []store.Refusal
	for i, res := range resp.GetResults() {
		itemErr := res.GetError()
		if itemErr == nil {
			delivered = append(delivered, entries[i].Seq)
			continue
		}
		code, reason := codes.Code(itemErr.GetCode()), itemErr.GetReason()
		if !refusedForGood(code, reason) {
			continue
		}
		r.log.WarnContext(ctx, "login relay: ProfileService refused a login outcome; kept as a dead letter",
			"event_id", req.Requests[i].GetEventId(), "code", code.String(), "reason", reason, "message", itemErr.GetMessage())
		refused = append(refused, store.Refusal{Seq: entries[i].Seq, Code: code.String(), Message: itemErr.GetMessage(), ErrorReason: reason})
	}
	span.SetAttributes(attribute.Int("oplog.login_outcomes_done", len(delivered)+len(refused)))
	return delivered, refused, nil
}

func deadLetteredCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "login_outbox_dead_lettered_total",
		Help: "Login outcomes ProfileService refused for good, moved from the outbox to the dead letters " +
			"(reason: its ErrorInfo reason, or its gRPC code when it gave none).",
	}, []string{"reason"})
	// Every series from the start, so rate() sees the first increase.
	for reason := range finalReasons {
		c.WithLabelValues(reason)
	}
	for code := range permanentCodes {
		c.WithLabelValues(code.String())
	}
	return c
}

// deadLetterLabel is a refusal's reason label: its ErrorInfo reason, or
// its code when it has none (a reason is a bounded set ProfileService
// defines; an unknown one still comes from that set).
func deadLetterLabel(f store.Refusal) string {
	if f.ErrorReason != "" {
		return f.ErrorReason
	}
	return f.Code
}

// finalReasons are the ErrorInfo reasons ProfileService gives for a
// login outcome that no resend can ever apply, and which Ingest cannot
// see coming: the outcome became older than ProfileService's
// -max-event-age while it waited (EVENT_TOO_OLD), or its event id was
// recorded for another account (EVENT_ID_CONFLICT). They are the
// contract the relay decides on; the message is for people.
var finalReasons = map[string]bool{
	"EVENT_TOO_OLD":     true,
	"EVENT_ID_CONFLICT": true,
}

// permanentCodes are the item codes that resending cannot help, for an
// answer without a reason the relay knows (a field ProfileService refused
// that Ingest accepted would be one: a bug, kept rather than retried
// forever).
var permanentCodes = map[codes.Code]bool{
	codes.InvalidArgument: true, codes.FailedPrecondition: true, codes.OutOfRange: true,
	codes.NotFound: true, codes.AlreadyExists: true, codes.PermissionDenied: true,
}

// refusedForGood reports whether an item refused with code and reason is
// kept as a dead letter rather than retried: by its reason when the relay
// knows it, else by its code.
func refusedForGood(code codes.Code, reason string) bool {
	if final, known := finalReasons[reason]; known {
		return final
	}
	return permanentCodes[code]
}

// links point at the spans that performed the operations being forwarded.
func links(entries []store.OutboxEntry) []trace.Link {
	var out []trace.Link
	for _, e := range entries {
		if len(out) == maxLinks {
			break
		}
		if sc, ok := spanContext(e.TraceID, e.SpanID); ok {
			out = append(out, trace.Link{SpanContext: sc})
		}
	}
	return out
}

func spanContext(traceID, spanID string) (trace.SpanContext, bool) {
	var tid trace.TraceID
	var sid trace.SpanID
	if len(traceID) != 2*len(tid) || len(spanID) != 2*len(sid) {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(tid[:], []byte(traceID)); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(sid[:], []byte(spanID)); err != nil {
		return trace.SpanContext{}, false
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return sc, sc.IsValid()
}

// jitter spreads retries: a random wait in [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// sleep waits d; it returns false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
