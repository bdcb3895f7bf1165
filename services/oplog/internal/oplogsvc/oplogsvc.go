// Package oplogsvc implements platforma.oplog.v1.OpLogService.
package oplogsvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"golang.org/x/sync/semaphore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/ingest"
	"github.com/platforma/platforma/services/oplog/internal/relay"
	"github.com/platforma/platforma/services/oplog/internal/store"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/redact"
)

// Limits of one Ingest stream.
const (
	// futureSkew is how far ahead of the server's clock create_time may be.
	futureSkew = 5 * time.Minute
)

// Config is OpLogService's own configuration.
type Config struct {
	Backfill     time.Duration
	RedactKeys   string
	BatchRows    int
	BatchDelay   time.Duration
	Writers      int
	BufferMiB    int
	ReceiveSlots int
	// BufferWait is how long a stream waits for buffer space or a receive
	// slot before RESOURCE_EXHAUSTED; 5s when zero. Not a flag.
	BufferWait time.Duration

	// ProfileAddr is ProfileService's address; login outcomes are
	// forwarded to it when set.
	ProfileAddr        string
	LoginRelayBatch    int
	LoginRelayInterval time.Duration
	// ProfileTLS: how the relay authenticates to ProfileService
	// (profiletls.go).
	ProfileTLS ProfileTLS

	MetricsMaxErrorTypes int
	MetricsMaxProxies    int

	// PageTokens signs and checks the page tokens of ListOperationLogs and
	// ListLoginDeadLetters. Not a flag: app passes the ring of
	// -page-token-keys. nil: a random key of this Server.
	PageTokens *pagetoken.Keyring
}

// DefaultConfig is the configuration the flags default to.
func DefaultConfig() Config {
	return Config{
		Backfill:     35 * 24 * time.Hour,
		RedactKeys:   strings.Join(redact.DefaultKeys(), ","),
		BatchRows:    5000,
		BatchDelay:   5 * time.Millisecond,
		Writers:      2,
		BufferMiB:    64,
		ReceiveSlots: 32,

		// oplogbench ingest: 6.8k outcomes/s delivered with 500 a call,
		// 4.4k with 100; ProfileService takes at most 1,000.
		LoginRelayBatch:    500,
		LoginRelayInterval: time.Second,

		MetricsMaxErrorTypes: 50,
		MetricsMaxProxies:    100,
	}
}

// RegisterFlags adds the service's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.DurationVar(&c.Backfill, "backfill-window", d.Backfill, "oldest create_time accepted")
	fs.StringVar(&c.RedactKeys, "redact-keys", d.RedactKeys,
		"comma-separated payload keys whose values are redacted (compared without case and separators, as suffixes)")
	fs.IntVar(&c.BatchRows, "ingest-batch-rows", d.BatchRows, "rows per group-commit transaction, at most")
	fs.DurationVar(&c.BatchDelay, "ingest-batch-delay", d.BatchDelay, "how long a batch waits for more rows after its first")
	fs.IntVar(&c.Writers, "ingest-writers", d.Writers, "group-commit transactions written at once")
	fs.IntVar(&c.BufferMiB, "ingest-buffer-mib", d.BufferMiB, "accepted rows waiting for their commit, in MiB; when full, streams wait, then get RESOURCE_EXHAUSTED")
	fs.IntVar(&c.ReceiveSlots, "ingest-receive-slots", d.ReceiveSlots, "stream messages validated and converted at once; streams waiting for their next message hold none")
	fs.StringVar(&c.ProfileAddr, "profile-addr", "",
		"ProfileService address (host:port); when set, CHECK_LOGIN and VALIDATE_SESSION rows are forwarded to it as login outcomes")
	fs.IntVar(&c.LoginRelayBatch, "login-relay-batch", d.LoginRelayBatch, "login outcomes per call to ProfileService (1-1000)")
	fs.DurationVar(&c.LoginRelayInterval, "login-relay-interval", d.LoginRelayInterval,
		"how often the relay looks for new login outcomes when it has caught up")
	c.ProfileTLS.registerFlags(fs)
	fs.IntVar(&c.MetricsMaxErrorTypes, "metrics-max-error-types", d.MetricsMaxErrorTypes,
		"distinct error_type label values in metrics; later ones are counted as \"other\"")
	fs.IntVar(&c.MetricsMaxProxies, "metrics-max-proxies", d.MetricsMaxProxies,
		"distinct proxy label values in metrics; later ones are counted as \"other\"")
}

// Validate checks the values.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	check(c.Backfill >= time.Hour, "BACKFILL_WINDOW (-backfill-window) must be at least 1h")
	check(c.BatchRows >= 1 && c.BatchRows <= 100000, "INGEST_BATCH_ROWS (-ingest-batch-rows) must be between 1 and 100000")
	check(c.BatchDelay >= 0 && c.BatchDelay <= time.Second, "INGEST_BATCH_DELAY (-ingest-batch-delay) must be between 0 and 1s")
	check(c.Writers >= 1 && c.Writers <= 64, "INGEST_WRITERS (-ingest-writers) must be between 1 and 64")
	check(c.BufferMiB >= 1 && c.BufferMiB <= 4096, "INGEST_BUFFER_MIB (-ingest-buffer-mib) must be between 1 and 4096")
	check(c.ReceiveSlots >= 1 && c.ReceiveSlots <= 4096, "INGEST_RECEIVE_SLOTS (-ingest-receive-slots) must be between 1 and 4096")
	if c.ProfileAddr != "" {
		_, _, err := net.SplitHostPort(c.ProfileAddr)
		check(err == nil || strings.Contains(c.ProfileAddr, ":///"),
			"PROFILE_ADDR (-profile-addr) must be host:port or a gRPC target such as dns:///profile:50051")
	}
	errs = append(errs, c.ProfileTLS.validate(c.ProfileAddr)...)
	check(c.LoginRelayBatch >= 1 && c.LoginRelayBatch <= 1000, "LOGIN_RELAY_BATCH (-login-relay-batch) must be between 1 and 1000")
	check(c.LoginRelayInterval >= time.Millisecond && c.LoginRelayInterval <= time.Minute,
		"LOGIN_RELAY_INTERVAL (-login-relay-interval) must be between 1ms and 1m")
	check(c.MetricsMaxErrorTypes >= 0 && c.MetricsMaxErrorTypes <= 1000, "METRICS_MAX_ERROR_TYPES (-metrics-max-error-types) must be between 0 and 1000")
	check(c.MetricsMaxProxies >= 0 && c.MetricsMaxProxies <= 10000, "METRICS_MAX_PROXIES (-metrics-max-proxies) must be between 0 and 10000")
	return errors.Join(errs...)
}

// Server implements OpLogService.
type Server struct {
	oplogv1.UnimplementedOpLogServiceServer
	convert  ingest.Converter
	store    *store.Store
	parts    *store.Partitions
	writer   *ingest.Writer
	metrics  *ingest.Metrics
	receive  *semaphore.Weighted
	slotWait time.Duration
	now      func() time.Time
	log      *slog.Logger
	tokens   *pagetoken.Keyring
}

// Register plugs the service, its group-commit writer, its partition
// maintenance, its metrics and, with a ProfileAddr, the login relay into
// a platforma server.
func Register(r server.Registrar, pool *pgxpool.Pool, cfg Config) error {
	s := New(pool, cfg, r.Logger, time.Now)
	oplogv1.RegisterOpLogServiceServer(r.GRPC, s)
	s.RegisterBackground(r)
	if err := registerAll(r.Metrics, s.metrics.Collectors()); err != nil {
		return err
	}
	if cfg.ProfileAddr == "" {
		r.Logger.Info("PROFILE_ADDR not set: login outcomes are not forwarded to ProfileService")
		return nil
	}
	return s.RegisterRelay(r, cfg)
}

// RegisterRelay adds the login relay to ProfileService at cfg.ProfileAddr
// to the server's background tasks, and its metrics.
func (s *Server) RegisterRelay(r server.Registrar, cfg Config) error {
	creds, err := cfg.ProfileTLS.dialOptions(r.Logger)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(cfg.ProfileAddr, append(creds,
		// The relay's health probes (every 200ms while it backs off)
		// would each be a trace of their own.
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))),
		// While ProfileService is down, try to reconnect at least every
		// half second (600ms with jitter), not after gRPC's default of up
		// to two minutes: the relay resumes once its health probe gets
		// through on this connection, which should be within a second of
		// ProfileService being back. An attempt against a server that is
		// down is a refused connection.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 5 * time.Second,
		}))...)
	if err != nil {
		return fmt.Errorf("PROFILE_ADDR: %w", err)
	}
	rel := relay.New(s.store, conn, relay.Config{
		BatchSize:       cfg.LoginRelayBatch,
		PollInterval:    cfg.LoginRelayInterval,
		StandbyInterval: min(5*cfg.LoginRelayInterval, 5*time.Second),
		InitialBackoff:  200 * time.Millisecond,
		// The cap spares a ProfileService that is up but failing
		// deliveries; after an outage the health probe ends the wait.
		MaxBackoff:  30 * time.Second,
		HealthProbe: 200 * time.Millisecond,
		CallTimeout: 30 * time.Second,
	}, r.Logger)
	if err := registerAll(r.Metrics, rel.Collectors()); err != nil {
		_ = conn.Close()
		return err
	}
	r.Background("login relay", func(ctx context.Context) {
		defer conn.Close()
		rel.Run(ctx)
	})
	return nil
}

func registerAll(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// RegisterBackground adds the group-commit writer and partition
// maintenance to the server's background tasks.
func (s *Server) RegisterBackground(r server.Registrar) {
	r.Background("ingest writer", s.RunWriter)
	r.Background("partition maintenance", func(ctx context.Context) {
		maintainPartitions(ctx, s.parts, s.convert.Window.Backfill, time.Hour, s.now, r.Logger)
	})
}

// RunWriter runs the group-commit writer until ctx ends; Ingest needs it.
func (s *Server) RunWriter(ctx context.Context) { s.writer.Run(ctx) }

// New builds the service; now is its clock (tests move it).
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger, now func() time.Time) *Server {
	st := store.New(pool)
	if cfg.ProfileAddr != "" {
		st.EnableLoginOutbox()
	}
	parts := store.NewPartitions(pool)
	m := ingest.NewMetrics(cfg.MetricsMaxErrorTypes, cfg.MetricsMaxProxies)
	wait := cfg.BufferWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	s := &Server{
		store: st,
		parts: parts,
		convert: ingest.Converter{
			Window: ingest.Window{Backfill: cfg.Backfill, FutureSkew: futureSkew},
			Keys:   redact.New(strings.Split(cfg.RedactKeys, ",")),
		},
		writer: ingest.NewWriter(st, parts, ingest.WriterConfig{
			BatchRows:   cfg.BatchRows,
			BatchDelay:  cfg.BatchDelay,
			Writers:     cfg.Writers,
			BufferBytes: int64(cfg.BufferMiB) << 20,
			BufferWait:  wait,
		}, m, log),
		metrics:  m,
		receive:  semaphore.NewWeighted(int64(cfg.ReceiveSlots)),
		slotWait: wait,
		now:      now,
		log:      log,
		tokens:   cfg.PageTokens,
	}
	if s.tokens == nil {
		s.tokens = pagetoken.NewRandomKeyring()
	}
	return s
}

// Ingest receives a stream of rows and answers once every accepted row is
// committed.
func (s *Server) Ingest(stream grpc.ClientStreamingServer[oplogv1.IngestRequest, oplogv1.IngestResponse]) error {
	ctx := stream.Context()
	resp := &oplogv1.IngestResponse{}
	var chunks []*ingest.Chunk
	var index int64
	for {
		frame, err := receiveMessage(stream)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rows, err := s.decodeMessage(ctx, frame, &index, resp)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			continue
		}
		chunk, err := s.writer.Submit(ctx, rows)
		if err != nil {
			if errors.Is(err, ingest.ErrBusy) {
				return saturated(msgDatabaseBehind)
			}
			return err
		}
		chunks = append(chunks, chunk)
	}
	for _, c := range chunks {
		inserted, duplicates, err := c.Wait(ctx)
		if err != nil {
			return err
		}
		resp.Accepted += int64(inserted)
		resp.Duplicates += int64(duplicates)
	}
	return stream.SendAndClose(resp)
}

// receiveMessage reads the stream's next message as bytes. Waiting for it
// costs nothing but the stream's goroutine: a stream that sends nothing
// holds no decode slot, so idle streams cannot starve busy ones. The
// server ends a stream that stays silent longer than its receive idle
// timeout (-recv-idle-timeout).
func receiveMessage(stream grpc.ServerStream) (*wire.Frame, error) {
	frame := &wire.Frame{}
	if err := stream.RecvMsg(frame); err != nil {
		return nil, err
	}
	return frame, nil
}

// decodeMessage validates and converts the rows of one received message
// inside a decode slot: at most ReceiveSlots messages are decoded at once,
// which bounds the CPU and the memory that decoding takes. Rejected rows
// are added to resp; index counts the stream's rows.
func (s *Server) decodeMessage(ctx context.Context, frame *wire.Frame, index *int64, resp *oplogv1.IngestResponse) ([]store.Row, error) {
	waitCtx, cancel := context.WithTimeout(ctx, s.slotWait)
	defer cancel()
	if err := s.receive.Acquire(waitCtx, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, saturated(msgDecodersBusy)
	}
	defer s.receive.Release(1)

	logs, err := ingest.SplitRequest(frame.Bytes)
	if err != nil {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("logs", err.Error()))
	}
	if len(logs) > wire.MaxRowsPerMessage {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("logs", fmt.Sprintf("at most %d rows per message", wire.MaxRowsPerMessage)))
	}
	if *index+int64(len(logs)) > wire.MaxRowsPerStream {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("logs", fmt.Sprintf("at most %d rows per stream; open another stream", wire.MaxRowsPerStream)))
	}
	now := s.now()
	rows := make([]store.Row, 0, len(logs))
	for _, b := range logs {
		row, rej := s.convert.Convert(b, now)
		if rej != nil {
			resp.Rejected = append(resp.Rejected, &oplogv1.RejectedLog{Index: *index, Id: ingest.RowID(b), Field: rej.Field, Reason: rej.Reason})
			s.metrics.Rejected(rej.Field)
		} else {
			rows = append(rows, row)
		}
		*index++
	}
	return rows, nil
}

// Why Ingest is saturated: each names its cause, so an operator knows
// whether to add database capacity or server CPU.
const (
	msgDatabaseBehind = "ingest is saturated: rows wait for the database to commit them (the database is slower than producers); resend after the retry delay"
	msgDecodersBusy   = "ingest is saturated: every decode slot is busy (this replica's CPU is slower than producers); resend after the retry delay"
)

// saturated is RESOURCE_EXHAUSTED with its cause and a retry delay.
func saturated(msg string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}); derr == nil {
		st = d
	}
	return st.Err()
}

// maintainPartitions creates the partitions of the accepted window and of
// the next month, now and every interval, so the write path rarely has to.
func maintainPartitions(ctx context.Context, parts *store.Partitions, backfill, interval time.Duration, clock func() time.Time, log *slog.Logger) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		now := clock()
		err := parts.EnsureRange(ctx, now.Add(-backfill), now.AddDate(0, 1, 0))
		if err != nil && ctx.Err() == nil {
			log.Warn("creating partitions failed; retrying next round (the write path also creates missing ones)", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
