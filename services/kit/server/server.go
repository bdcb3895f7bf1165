// Package server is the gRPC runtime every platforma service shares: TLS,
// the interceptor chain (authentication and authorization included),
// health that follows the database, reflection, Prometheus metrics and
// graceful shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/auth"
)

// Config is the runtime configuration of a server.
type Config struct {
	// ListenAddr is the gRPC address, host:port.
	ListenAddr string
	// MetricsAddr serves /metrics, host:port.
	MetricsAddr string
	// PprofAddr, if set, serves /debug/pprof/ on its own listener; it
	// must be a loopback address (pprof has no authentication).
	PprofAddr string
	// HealthAddr, if set, serves grpc.health.v1 alone, in plaintext, on
	// its own listener: for probes that cannot do TLS (kubelet's grpc
	// probes). It answers what health on ListenAddr answers, plus
	// LivenessService.
	HealthAddr string
	// TLS is the gRPC listener's TLS configuration (tlsfiles.ServerConfig).
	// Without it the server refuses to start unless Insecure is set.
	TLS *tls.Config
	// Insecure serves plaintext gRPC; only with TLS nil.
	Insecure bool
	// ShutdownTimeout bounds how long in-flight calls may take to finish
	// after a shutdown starts; then they are cut off.
	ShutdownTimeout time.Duration
	// HealthInterval is how often the database is pinged for health while
	// it answers; while it does not, it is pinged every 250ms (or every
	// HealthInterval when shorter), so health turns SERVING again soon
	// after the database is back.
	HealthInterval time.Duration
	// MaxRecvMsgSize bounds one request message, in bytes.
	MaxRecvMsgSize int
	// Limits bound what one client can hold; zero fields take the
	// defaults of DefaultLimits.
	Limits Limits
}

// Limits are the transport limits a slow or malicious client cannot
// exceed. The defaults never get in the way of well-behaved clients: they
// send a request at once, and grpc clients queue calls beyond a
// connection's stream limit and reconnect by themselves when a connection
// is closed gracefully.
type Limits struct {
	// MaxConcurrentStreams bounds the calls open at once on one
	// connection; a client's further calls wait for one to finish.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a call's request headers (metadata), in
	// bytes; larger ones are refused before anything is allocated for
	// them.
	MaxHeaderListSize uint32
	// HandshakeTimeout bounds the time from accepting a TCP connection
	// to the end of the HTTP/2 handshake.
	HandshakeTimeout time.Duration
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it; KeepaliveTimeout how long it waits for the answer
	// before closing it (a vanished client's calls are then cleaned up).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// MaxConnectionIdle closes (GOAWAY) a connection without calls for
	// this long.
	MaxConnectionIdle time.Duration
	// MaxConnectionAge closes a connection gracefully after this long
	// (±10 %), which also spreads clients over new replicas;
	// MaxConnectionAgeGrace is how long its calls then get to finish.
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	// RecvTimeout: a unary or server-streaming call's request (its
	// message and the end of the client's stream) must arrive within this
	// of the call's start, or the call is cut off with DEADLINE_EXCEEDED.
	RecvTimeout time.Duration
	// RecvIdleTimeout: a client-streaming call is cut off when the server
	// waits this long for the client's next message.
	RecvIdleTimeout time.Duration
}

// DefaultLimits are the limits used for zero fields of Limits (and the
// defaults of the flags).
func DefaultLimits() Limits {
	return Limits{
		// 4× the busiest single-connection client we have (64 callers in
		// the benchmarks); HTTP/2 recommends no less than 100.
		MaxConcurrentStreams: 256,
		// gRPC headers with a trace context are under 1 KiB.
		MaxHeaderListSize: 16 << 10,
		HandshakeTimeout:  10 * time.Second,
		KeepaliveTime:     time.Minute,
		KeepaliveTimeout:  20 * time.Second,
		MaxConnectionIdle: 5 * time.Minute,
		MaxConnectionAge:  30 * time.Minute,
		// Longer than any unary call or Ingest stream takes.
		MaxConnectionAgeGrace: time.Minute,
		RecvTimeout:           10 * time.Second,
		RecvIdleTimeout:       30 * time.Second,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	fill := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = d.MaxConcurrentStreams
	}
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = d.MaxHeaderListSize
	}
	fill(&l.HandshakeTimeout, d.HandshakeTimeout)
	fill(&l.KeepaliveTime, d.KeepaliveTime)
	fill(&l.KeepaliveTimeout, d.KeepaliveTimeout)
	fill(&l.MaxConnectionIdle, d.MaxConnectionIdle)
	fill(&l.MaxConnectionAge, d.MaxConnectionAge)
	fill(&l.MaxConnectionAgeGrace, d.MaxConnectionAgeGrace)
	fill(&l.RecvTimeout, d.RecvTimeout)
	fill(&l.RecvIdleTimeout, d.RecvIdleTimeout)
	return l
}

// Pinger is the database as health sees it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Registrar is what a service gets to plug itself in.
type Registrar struct {
	// GRPC is where the service registers its implementation.
	GRPC grpc.ServiceRegistrar
	// Metrics is where it registers its own Prometheus collectors.
	Metrics prometheus.Registerer
	// Logger is the server's logger.
	Logger *slog.Logger

	server *Server
}

// Background adds a task that runs while the server runs: started by Run,
// its context cancelled once the gRPC server has stopped (so tasks that
// in-flight calls depend on outlive those calls), and awaited before Run
// returns. A task must return when its context ends.
func (r Registrar) Background(name string, task func(ctx context.Context)) {
	r.server.background = append(r.server.background, backgroundTask{name: name, run: task})
}

// Stopping is closed when the server starts shutting down, before it
// waits for in-flight calls: a service ends its long-lived streams (such
// as ProfileService's watches) on it, so that they do not hold the
// shutdown until its timeout.
func (r Registrar) Stopping() <-chan struct{} { return r.server.stopping }

// Every runs round at once and then every interval, until ctx ends: the
// loop of a background task that works in rounds. A round that outlasts
// the interval is followed at once by the next.
func Every(ctx context.Context, interval time.Duration, round func(ctx context.Context)) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

type backgroundTask struct {
	name string
	run  func(ctx context.Context)
}

// Options are the parts a service supplies.
type Options struct {
	Logger   *slog.Logger
	Database Pinger
	// Register registers the service's gRPC implementations and metrics.
	Register func(Registrar) error
	// Codec, if set, decodes requests and encodes responses instead of
	// grpc's protobuf codec. The server wraps it so that a request it
	// cannot decode is answered INVALID_ARGUMENT (and logged and counted)
	// rather than INTERNAL before any interceptor.
	Codec encoding.CodecV2
	// GRPCOptions are the service's own server options, added after the
	// shared ones. A codec belongs in Codec: one forced here replaces the
	// server's, and malformed requests are INTERNAL again.
	GRPCOptions []grpc.ServerOption
	// Auth authenticates, authorizes, rate-limits and audits every call
	// but health and reflection; its method table is checked against the
	// registered services. Required unless WithoutAuth.
	Auth *auth.Auth
	// WithoutAuth runs the server with no authentication at all. Only for
	// the tests of this runtime itself: the binaries (package app) always
	// set Auth and have no flag for this.
	WithoutAuth bool
}

// forcedStopGrace is how long handlers get to return after their calls
// were cut off at the shutdown timeout.
const forcedStopGrace = 5 * time.Second

// Server is a gRPC server plus its metrics endpoint. Create it with New,
// then call Run.
type Server struct {
	cfg        Config
	limits     Limits
	guard      *guard
	log        *slog.Logger
	db         Pinger
	grpc       *grpc.Server
	health     *health.Server
	stopping   chan struct{} // closed when shutdown starts
	services   []string      // service names whose health follows the database
	lis        net.Listener
	metricsLis net.Listener
	metricsSrv *http.Server
	pprofLis   net.Listener // nil when off
	pprofSrv   *http.Server
	healthLis  net.Listener // nil when off
	healthGRPC *grpc.Server
	background []backgroundTask
}

// New builds the server and binds both listeners, so the addresses are
// known (and the ports taken) before Run.
func New(cfg Config, opts Options) (*Server, error) {
	if opts.Logger == nil || opts.Database == nil || opts.Register == nil {
		return nil, errors.New("server: Logger, Database and Register are required")
	}
	switch {
	case cfg.TLS == nil && !cfg.Insecure:
		return nil, errors.New("server: no TLS configuration; plaintext needs Insecure")
	case cfg.TLS != nil && cfg.Insecure:
		return nil, errors.New("server: TLS and Insecure are exclusive")
	case opts.Auth == nil && !opts.WithoutAuth:
		return nil, errors.New("server: Auth is required")
	case opts.Auth != nil && opts.WithoutAuth:
		return nil, errors.New("server: Auth and WithoutAuth are exclusive")
	}
	if cfg.PprofAddr != "" {
		if err := CheckLoopback(cfg.PprofAddr); err != nil {
			return nil, fmt.Errorf("server: pprof address %q: %w", cfg.PprofAddr, err)
		}
	}
	limits := cfg.Limits.withDefaults()
	s := &Server{
		cfg:      cfg,
		limits:   limits,
		guard:    newGuard(opts.Logger, limits.RecvTimeout, limits.RecvIdleTimeout),
		log:      opts.Logger,
		db:       opts.Database,
		health:   health.NewServer(),
		stopping: make(chan struct{}),
	}

	registry := prometheus.NewRegistry()
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
	))
	itemRefusals := apierr.NewItemRefusals(s.log)
	panics := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "grpc_server_panics_recovered_total",
		Help: "Panics in gRPC handlers turned into INTERNAL errors.",
	})
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		grpcMetrics,
		panics,
		s.guard.timeouts,
		itemRefusals.Collector(),
	} {
		if err := registry.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}

	codec := opts.Codec
	if codec == nil {
		codec = encoding.GetCodecV2(grpcproto.Name)
	}
	// The service's own options last, so they can override; the
	// server's codec before them (see Options.GRPCOptions).
	serverOpts := append(s.serverOptions(grpcMetrics, panics, itemRefusals, opts.Auth), grpc.ForceServerCodecV2(decodeCodec{inner: codec, g: s.guard}))
	if cfg.TLS != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.grpc = grpc.NewServer(append(serverOpts, opts.GRPCOptions...)...)
	// Every service, health and reflection included, registers through the
	// guard, which bounds how long its calls wait for their requests.
	registrar := guardRegistrar{srv: s.grpc, g: s.guard}
	if err := opts.Register(Registrar{GRPC: registrar, Metrics: registry, Logger: s.log, server: s}); err != nil {
		return nil, err
	}
	for name := range s.grpc.GetServiceInfo() {
		s.services = append(s.services, name)
	}
	sort.Strings(s.services)
	healthgrpc.RegisterHealthServer(registrar, healthService{Server: s.health, stopping: s.stopping})
	reflection.Register(registrar) // v1 and v1alpha: grpcurl works without proto files
	if opts.Auth != nil {
		// Every method registered has its rule, every rule its method.
		if err := opts.Auth.Check(s.grpc.GetServiceInfo()); err != nil {
			return nil, err
		}
	}
	grpcMetrics.InitializeMetrics(s.grpc)
	// Until the first database check says otherwise.
	s.setServing(false)
	s.health.SetServingStatus(LivenessService, healthgrpc.HealthCheckResponse_SERVING)

	var err error
	if s.lis, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	if s.metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
		s.closeListeners()
		return nil, fmt.Errorf("listen on %s for metrics: %w", cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry}))
	s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if cfg.PprofAddr != "" {
		// Profiles only on a loopback listener of their own: how to find
		// where a busy replica spends its CPU (kubectl port-forward, ssh),
		// never reachable from the network.
		if s.pprofLis, err = net.Listen("tcp", cfg.PprofAddr); err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("listen on %s for pprof: %w", cfg.PprofAddr, err)
		}
		pmux := http.NewServeMux()
		pmux.HandleFunc("/debug/pprof/", pprof.Index)
		pmux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.pprofSrv = &http.Server{Handler: pmux, ReadHeaderTimeout: 10 * time.Second}
	}
	if cfg.HealthAddr != "" {
		if s.healthLis, err = net.Listen("tcp", cfg.HealthAddr); err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("listen on %s for health: %w", cfg.HealthAddr, err)
		}
		// Health alone, so plaintext exposes nothing else; the same
		// transport limits and receive timeouts as the main listener.
		s.healthGRPC = grpc.NewServer(append(connectionLimits(limits), grpc.MaxRecvMsgSize(4<<10))...)
		healthgrpc.RegisterHealthServer(guardRegistrar{srv: s.healthGRPC, g: s.guard}, healthService{Server: s.health, stopping: s.stopping})
	}
	return s, nil
}

// LivenessService is the health service name that is SERVING from the
// server's start until its shutdown, whatever the database does: what a
// liveness probe asks, so that a database outage makes replicas unready,
// never restarted.
const LivenessService = "liveness"

// closeListeners closes what New has bound so far.
func (s *Server) closeListeners() {
	for _, l := range []net.Listener{s.lis, s.metricsLis, s.pprofLis, s.healthLis} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// CheckLoopback accepts host:port addresses whose host is a loopback
// address or "localhost": addresses only this machine can reach.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("must be a loopback address such as 127.0.0.1:6060 or [::1]:6060 (pprof has no authentication)")
}

// serverOptions is the one place that decides the interceptor order.
func (s *Server) serverOptions(metrics *grpcprom.ServerMetrics, panics prometheus.Counter, itemRefusals *apierr.ItemRefusals, a *auth.Auth) []grpc.ServerOption {
	recoveryOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		panics.Inc()
		s.log.ErrorContext(ctx, "panic in gRPC handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	logger := logging.LoggerFunc(func(ctx context.Context, level logging.Level, msg string, fields ...any) {
		s.log.Log(ctx, slog.Level(level), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(levelForCode),
		// What the client was not told (a database error behind
		// UNAVAILABLE, say) goes on the call's line.
		logging.WithErrorFields(func(err error) logging.Fields {
			if cause := apierr.Cause(err); cause != nil {
				return logging.Fields{"cause", cause.Error()}
			}
			return nil
		}),
		// Who called (the caller's subject, never a credential), once
		// authentication has run: every line of an authenticated call
		// and every refusal after it names the caller.
		logging.WithFieldsFromContextAndCallMeta(func(ctx context.Context, _ interceptors.CallMeta) logging.Fields {
			if who := auth.Caller(ctx); who != "" {
				return logging.Fields{"auth.subject", who}
			}
			return nil
		}),
	}
	// Probes call health every few seconds; their lines would drown the rest.
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthgrpc.Health_ServiceDesc.ServiceName
	})
	l := s.limits

	unary := []grpc.UnaryServerInterceptor{
		callInfoUnary,
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, logOpts...), notHealth),
		metrics.UnaryServerInterceptor(),
		apierr.UnaryServerInterceptor(s.log),
	}
	stream := []grpc.StreamServerInterceptor{
		callInfoStream,
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(logger, logOpts...), notHealth),
		metrics.StreamServerInterceptor(),
		apierr.StreamServerInterceptor(s.log),
	}
	if a != nil {
		unary = append(unary, a.UnaryServerInterceptor())
		stream = append(stream, a.StreamServerInterceptor())
	}
	unary = append(unary, itemRefusals.UnaryServerInterceptor(), decodeInterceptor)
	if a != nil {
		unary = append(unary, a.AuditUnaryServerInterceptor())
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recoveryOpt))
	stream = append(stream, recovery.StreamServerInterceptor(recoveryOpt))

	return append([]grpc.ServerOption{
		// Traces for every call but health checks.
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))),
		// Outermost first:
		//  0. call info: a place for 4 to leave the caller's subject, so
		//     that 1 can name it;
		//  1. logging: one line per finished call, with its final code
		//     (and auth.subject once authenticated);
		//  2. metrics: counts and latency per method and code;
		//  3. apierr: turns handler errors into statuses, so 1 and 2 see
		//     the codes clients get (and 1 the causes they do not);
		//  4. auth: authentication (client certificate or bearer token),
		//     authorization (the method table), the caller's rate limit:
		//     UNAUTHENTICATED, PERMISSION_DENIED and RESOURCE_EXHAUSTED
		//     are logged by 1 and counted by 2, and nothing below runs;
		//     health and reflection pass untouched;
		//  5. (unary) item refusals: a batch call succeeds even when some
		//     of its items are refused; each such item is logged and
		//     counted (platforma_batch_items_refused_total);
		//  6. (unary) decodeInterceptor: a request that is not valid
		//     protobuf is INVALID_ARGUMENT, without calling the handler
		//     (streams get it from RecvMsg, see receive.go);
		//  7. (unary) audit: an operator's read of the op log or the
		//     profiles leaves its audit line, for well-formed requests
		//     only (streams are audited by 4 at their first message);
		//  8. recovery, innermost: a panic becomes INTERNAL that 1-3 see,
		//     so it is logged and counted like any other failure.
		// Receive timeouts act below the chain (receive.go): a call cut off
		// there is logged and counted on its own. TLS (Config.TLS) is the
		// transport's: a failed handshake never becomes a call.
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(s.cfg.MaxRecvMsgSize),
		// Reuse handler goroutines, whose stacks have already grown through
		// the interceptors and pgx, instead of starting one per call
		// (measured: ~10% more calls per second on small RPCs). Calls
		// beyond the pool still get their own goroutine.
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
	}, connectionLimits(l)...)
}

// connectionLimits are what one connection may hold (see Limits), on every
// listener that serves gRPC.
func connectionLimits(l Limits) []grpc.ServerOption {
	return []grpc.ServerOption{
		// Workers keep connections open between bursts; allow their pings
		// but not a ping flood.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(l.MaxHeaderListSize),
		grpc.ConnectionTimeout(l.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     l.MaxConnectionIdle,
			MaxConnectionAge:      l.MaxConnectionAge,
			MaxConnectionAgeGrace: l.MaxConnectionAgeGrace,
			Time:                  l.KeepaliveTime,
			Timeout:               l.KeepaliveTimeout,
		}),
	}
}

// levelForCode is apierr.LogLevel: client mistakes are never errors.
func levelForCode(c codes.Code) logging.Level {
	return logging.Level(apierr.LogLevel(c))
}

// Addr is the bound gRPC address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// MetricsAddr is the bound metrics address.
func (s *Server) MetricsAddr() string { return s.metricsLis.Addr().String() }

// HealthAddr is the plaintext health listener's address, "" when off.
func (s *Server) HealthAddr() string {
	if s.healthLis == nil {
		return ""
	}
	return s.healthLis.Addr().String()
}

// PprofAddr is the bound pprof address, "" when pprof is off.
func (s *Server) PprofAddr() string {
	if s.pprofLis == nil {
		return ""
	}
	return s.pprofLis.Addr().String()
}

// callInfoUnary and callInfoStream give the call a place where auth
// leaves the caller's subject for the log line (auth.Caller).
func callInfoUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(auth.WithCallInfo(ctx), req)
}

func callInfoStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, ctxStream{ServerStream: ss, ctx: auth.WithCallInfo(ss.Context())})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// Run serves until ctx ends, then shuts down gracefully: health turns
// NOT_SERVING, no new calls are accepted, in-flight calls (streams
// included) get ShutdownTimeout to finish, then the rest are cut off. It
// returns nil after a requested shutdown and the error if serving failed.
func (s *Server) Run(ctx context.Context) error {
	serveErr := make(chan error, 4) // one per listener
	go func() { serveErr <- s.grpc.Serve(s.lis) }()
	go func() {
		if err := s.metricsSrv.Serve(s.metricsLis); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("metrics server: %w", err)
		}
	}()
	if s.pprofSrv != nil {
		go func() {
			if err := s.pprofSrv.Serve(s.pprofLis); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("pprof server: %w", err)
			}
		}()
	}
	if s.healthGRPC != nil {
		go func() {
			if err := s.healthGRPC.Serve(s.healthLis); err != nil {
				serveErr <- fmt.Errorf("health server: %w", err)
			}
		}()
	}

	watchCtx, stopWatching := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		s.watchDatabase(watchCtx)
	}()
	bgCtx, stopBackground := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	for _, task := range s.background {
		bg.Add(1)
		go func() {
			defer bg.Done()
			task.run(bgCtx)
			if bgCtx.Err() == nil {
				s.log.Warn("background task ended early", "task", task.name)
			}
		}()
	}
	attrs := []any{"addr", s.Addr(), "metrics_addr", s.MetricsAddr(), "tls", s.cfg.TLS != nil, "services", s.services}
	if s.pprofSrv != nil {
		attrs = append(attrs, "pprof_addr", s.PprofAddr())
	}
	if s.healthGRPC != nil {
		attrs = append(attrs, "health_addr", s.HealthAddr())
	}
	s.log.Info("serving", attrs...)

	var err error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	case err = <-serveErr:
		s.log.Error("serving failed, shutting down", "error", err)
	}
	stopWatching()
	<-watched
	s.shutdown()
	stopBackground()
	if !waitTimeout(&bg, s.cfg.ShutdownTimeout) {
		s.log.Error("background tasks did not stop in time; exiting without them")
	}
	return err
}

// waitTimeout waits for wg, at most d. It reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (s *Server) shutdown() {
	close(s.stopping)
	s.health.Shutdown()

	// A fresh context: the one that asked for the shutdown is already done.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
		s.log.Info("all calls finished")
	case <-ctx.Done():
		s.log.Warn("shutdown timeout reached, cutting off remaining calls")
		// Stop closes every connection and cancels every call's context.
		s.grpc.Stop()
		select {
		case <-stopped:
		case <-time.After(forcedStopGrace):
			// A handler that ignores its context would block the exit
			// forever; the process ends and takes it along.
			s.log.Error("handlers still running after the forced stop; exiting without them")
		}
	}

	metricsCtx, cancelMetrics := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelMetrics()
	if err := s.metricsSrv.Shutdown(metricsCtx); err != nil {
		s.log.Warn("metrics server shutdown", "error", err)
	}
	if s.pprofSrv != nil {
		// A profile being taken is cut off: no one waits for it.
		_ = s.pprofSrv.Close()
	}
	if s.healthGRPC != nil {
		// Last: probes read NOT_SERVING for as long as calls drain.
		s.healthGRPC.Stop()
	}
}

// recoveryInterval is how often an unreachable database is pinged (when
// HealthInterval is longer). Clients that wait for a service to come back
// (the login relay watches ProfileService's health) then see it SERVING
// within this of its database answering again, not a whole HealthInterval
// later. The extra pings happen only while the database is unreachable,
// when each is at most a failed connection attempt.
const recoveryInterval = 250 * time.Millisecond

// watchDatabase pings the database and reports every service SERVING while
// it answers, NOT_SERVING while it does not: every HealthInterval while it
// answers, every recoveryInterval at most while it does not.
func (s *Server) watchDatabase(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	serving, known := false, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		interval := s.pingInterval(serving)
		began := time.Now()
		// A ping may take at most the interval, so that pings never
		// overlap. A pool's connection attempt that outlasts the ping
		// goes on and serves the next one (pgxpool connects in the
		// background), so a short timeout does not keep a slow-to-connect
		// database NOT_SERVING.
		pingCtx, cancel := context.WithTimeout(ctx, interval)
		err := s.db.Ping(pingCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if up := err == nil; up != serving || !known {
			serving, known = up, true
			s.setServing(up)
			if up {
				s.log.Info("database reachable: SERVING")
			} else {
				s.log.Warn("database unreachable: NOT_SERVING", "error", err)
			}
		}
		// The next ping an interval after this one began, as a ticker
		// would: a ping that timed out is followed at once by the next.
		timer.Reset(max(0, s.pingInterval(serving)-time.Since(began)))
	}
}

// pingInterval is the time between pings while the database answers
// (serving) or does not.
func (s *Server) pingInterval(serving bool) time.Duration {
	if serving {
		return s.cfg.HealthInterval
	}
	return min(s.cfg.HealthInterval, recoveryInterval)
}

func (s *Server) setServing(up bool) {
	st := healthgrpc.HealthCheckResponse_NOT_SERVING
	if up {
		st = healthgrpc.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for _, name := range s.services {
		s.health.SetServingStatus(name, st)
	}
}
