package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/services/kit/logging"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
)

// EnvName is the environment variable equivalent to a flag:
// -database-url ⇔ DATABASE_URL.
func EnvName(flagName string) string {
	return strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command
// line from its environment variable. Precedence: flag, env, default.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvName(f.Name)
		if v := getenv(env); v != "" && !given[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// usage prints every flag with its environment variable.
func usage(w io.Writer, fs *flag.FlagSet, synopsis string) func() {
	return func() {
		fmt.Fprintf(w, "usage: %s\n\nflags (each also read from the environment variable shown):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, "  -%s, %s%s\n      %s\n", f.Name, EnvName(f.Name), def, f.Usage)
		})
	}
}

// commonConfig is what both subcommands need.
type commonConfig struct {
	DatabaseURL string
	LogLevel    string
	LogFormat   string
}

func (c *commonConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres connection URL, e.g. postgres://profile@localhost:5432/platforma (required)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error; debug logs every call")
	fs.StringVar(&c.LogFormat, "log-format", logging.FormatJSON, "json or text")
}

func (c *commonConfig) validate() []error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL (-database-url) is required, e.g. postgres://user@localhost:5432/platforma"))
	} else if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		// pgx redacts the password in its parse errors.
		errs = append(errs, fmt.Errorf("DATABASE_URL (-database-url) is invalid: %v", err))
	}
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL (-log-level): %v", err))
	}
	if c.LogFormat != logging.FormatJSON && c.LogFormat != logging.FormatText {
		errs = append(errs, fmt.Errorf("LOG_FORMAT (-log-format) must be json or text, not %q", c.LogFormat))
	}
	return errs
}

// serveConfig is the configuration of `<service> serve`.
type serveConfig struct {
	commonConfig
	ListenAddr       string
	MetricsAddr      string
	HealthAddr       string
	ShutdownTimeout  time.Duration
	HealthInterval   time.Duration
	DBMaxConns       int
	DBConnectTimeout time.Duration
	MaxRecvMsgBytes  int

	// The read replica of the query RPCs (db.Reads).
	ReadDatabaseURL string
	ReadMaxLag      time.Duration

	// Transport limits (server.Limits).
	MaxConcurrentStreams  int
	MaxHeaderListBytes    int
	HandshakeTimeout      time.Duration
	KeepaliveTime         time.Duration
	KeepaliveTimeout      time.Duration
	MaxConnectionIdle     time.Duration
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	RecvTimeout           time.Duration
	RecvIdleTimeout       time.Duration

	// Keys of the page tokens (pageTokenKeys).
	PageTokenKeys     string
	PageTokenKeysFile string

	// TLS, authentication, rate limits and pprof (security.go).
	security securityConfig
}

// limits are the transport limits the flags set.
func (c *serveConfig) limits() server.Limits {
	return server.Limits{
		MaxConcurrentStreams:  uint32(c.MaxConcurrentStreams),
		MaxHeaderListSize:     uint32(c.MaxHeaderListBytes),
		HandshakeTimeout:      c.HandshakeTimeout,
		KeepaliveTime:         c.KeepaliveTime,
		KeepaliveTimeout:      c.KeepaliveTimeout,
		MaxConnectionIdle:     c.MaxConnectionIdle,
		MaxConnectionAge:      c.MaxConnectionAge,
		MaxConnectionAgeGrace: c.MaxConnectionAgeGrace,
		RecvTimeout:           c.RecvTimeout,
		RecvIdleTimeout:       c.RecvIdleTimeout,
	}
}

func (c *serveConfig) register(fs *flag.FlagSet, svc Service) {
	c.commonConfig.register(fs)
	fs.StringVar(&c.ListenAddr, "listen-addr", svc.DefaultListenAddr, "gRPC listen address, host:port")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", svc.DefaultMetricsAddr, "Prometheus /metrics listen address, host:port")
	fs.StringVar(&c.HealthAddr, "health-addr", "", "plaintext gRPC health (only) on this address, host:port, for probes that cannot do TLS (kubelet's grpc probes); empty = off")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight calls may run after SIGTERM before they are cut off")
	fs.DurationVar(&c.HealthInterval, "health-interval", 2*time.Second, "how often the database is pinged for gRPC health while it answers (while it does not: every 250ms, or this when shorter)")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", 16, "maximum connections in the pool")
	fs.DurationVar(&c.DBConnectTimeout, "db-connect-timeout", 5*time.Second, "timeout for opening one database connection")
	fs.StringVar(&c.ReadDatabaseURL, "read-database-url", "", "Postgres URL of a streaming replica the query RPCs read from while it is at most -read-max-lag behind; its pool has -db-max-conns connections too; empty = the primary serves them")
	fs.DurationVar(&c.ReadMaxLag, "read-max-lag", 10*time.Second, "the read replica's staleness bound: further behind (or down), the query RPCs read from the primary")
	maxMsg := 4 << 20
	if svc.DefaultMaxRecvMsgBytes > 0 {
		maxMsg = svc.DefaultMaxRecvMsgBytes
	}
	fs.IntVar(&c.MaxRecvMsgBytes, "max-recv-msg-bytes", maxMsg, "largest request message accepted, in bytes")
	d := server.DefaultLimits()
	fs.IntVar(&c.MaxConcurrentStreams, "max-concurrent-streams", int(d.MaxConcurrentStreams), "calls open at once on one connection; a client's further calls wait")
	fs.IntVar(&c.MaxHeaderListBytes, "max-header-list-bytes", int(d.MaxHeaderListSize), "largest request headers (metadata) accepted, in bytes")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", d.HandshakeTimeout, "time from accepting a connection to the end of its HTTP/2 handshake")
	fs.DurationVar(&c.KeepaliveTime, "keepalive-time", d.KeepaliveTime, "silence on a connection before the server pings it")
	fs.DurationVar(&c.KeepaliveTimeout, "keepalive-timeout", d.KeepaliveTimeout, "how long the server waits for a ping's answer before closing the connection")
	fs.DurationVar(&c.MaxConnectionIdle, "max-connection-idle", d.MaxConnectionIdle, "a connection without calls for this long is closed gracefully")
	fs.DurationVar(&c.MaxConnectionAge, "max-connection-age", d.MaxConnectionAge, "a connection is closed gracefully after this long (±10%); clients reconnect")
	fs.DurationVar(&c.MaxConnectionAgeGrace, "max-connection-age-grace", d.MaxConnectionAgeGrace, "how long calls on a connection closed for its age get to finish")
	fs.DurationVar(&c.RecvTimeout, "recv-timeout", d.RecvTimeout, "unary and server-streaming calls: the request must arrive within this of the call's start, else DEADLINE_EXCEEDED")
	fs.DurationVar(&c.RecvIdleTimeout, "recv-idle-timeout", d.RecvIdleTimeout, "client-streaming calls: longest wait for the client's next message, else DEADLINE_EXCEEDED")
	fs.StringVar(&c.PageTokenKeys, "page-token-keys", "", "keys that sign page tokens: kid:base64key,... (each 32+ random bytes), the first signs, all verify; unset: a random key per process, so tokens fail after a restart and on other replicas")
	fs.StringVar(&c.PageTokenKeysFile, "page-token-keys-file", "", "file holding the page token keys, in -page-token-keys' format (commas or one per line); instead of -page-token-keys")
	c.security.register(fs)
	if svc.Config != nil {
		svc.Config.RegisterFlags(fs)
	}
}

func (c *serveConfig) validate(svc Service) error {
	errs := c.commonConfig.validate()
	if svc.Config != nil {
		if err := svc.Config.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := c.pageTokenKeys(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.security.validate()...)
	for _, a := range []struct{ name, value string }{
		{"LISTEN_ADDR (-listen-addr)", c.ListenAddr},
		{"METRICS_ADDR (-metrics-addr)", c.MetricsAddr},
	} {
		if err := validateAddr(a.value); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", a.name, a.value, err))
		}
	}
	if c.ReadDatabaseURL != "" { // empty: no replica
		if _, err := pgxpool.ParseConfig(c.ReadDatabaseURL); err != nil {
			// pgx redacts the password in its parse errors.
			errs = append(errs, fmt.Errorf("READ_DATABASE_URL (-read-database-url) is invalid: %v", err))
		}
	}
	if c.HealthAddr != "" { // empty: off
		if err := validateAddr(c.HealthAddr); err != nil {
			errs = append(errs, fmt.Errorf("HEALTH_ADDR (-health-addr) %q: %v", c.HealthAddr, err))
		}
	}
	positive := []struct {
		name string
		ok   bool
	}{
		{"SHUTDOWN_TIMEOUT (-shutdown-timeout) must be positive", c.ShutdownTimeout > 0},
		{"HEALTH_INTERVAL (-health-interval) must be positive", c.HealthInterval > 0},
		{"DB_MAX_CONNS (-db-max-conns) must be between 1 and 10000", c.DBMaxConns >= 1 && c.DBMaxConns <= 10000},
		{"DB_CONNECT_TIMEOUT (-db-connect-timeout) must be positive", c.DBConnectTimeout > 0},
		{"READ_MAX_LAG (-read-max-lag) must be positive", c.ReadMaxLag > 0},
		{"MAX_RECV_MSG_BYTES (-max-recv-msg-bytes) must be between 1024 and 268435456", c.MaxRecvMsgBytes >= 1024 && c.MaxRecvMsgBytes <= 256<<20},
		{"MAX_CONCURRENT_STREAMS (-max-concurrent-streams) must be between 1 and 65536", c.MaxConcurrentStreams >= 1 && c.MaxConcurrentStreams <= 1<<16},
		{"MAX_HEADER_LIST_BYTES (-max-header-list-bytes) must be between 4096 and 16777216", c.MaxHeaderListBytes >= 4<<10 && c.MaxHeaderListBytes <= 16<<20},
		{"HANDSHAKE_TIMEOUT (-handshake-timeout) must be positive", c.HandshakeTimeout > 0},
		{"KEEPALIVE_TIME (-keepalive-time) must be at least 1s", c.KeepaliveTime >= time.Second},
		{"KEEPALIVE_TIMEOUT (-keepalive-timeout) must be positive", c.KeepaliveTimeout > 0},
		{"MAX_CONNECTION_IDLE (-max-connection-idle) must be positive", c.MaxConnectionIdle > 0},
		{"MAX_CONNECTION_AGE (-max-connection-age) must be positive", c.MaxConnectionAge > 0},
		{"MAX_CONNECTION_AGE_GRACE (-max-connection-age-grace) must be positive", c.MaxConnectionAgeGrace > 0},
		{"RECV_TIMEOUT (-recv-timeout) must be positive", c.RecvTimeout > 0},
		{"RECV_IDLE_TIMEOUT (-recv-idle-timeout) must be positive", c.RecvIdleTimeout > 0},
	}
	for _, p := range positive {
		if !p.ok {
			errs = append(errs, errors.New(p.name))
		}
	}
	return errors.Join(errs...)
}

// pageTokenKeys is the key ring of -page-token-keys or
// -page-token-keys-file, nil when neither is set. Errors name the variable
// and the key id, never a key.
func (c *serveConfig) pageTokenKeys() (*pagetoken.Keyring, error) {
	spec, name := c.PageTokenKeys, "PAGE_TOKEN_KEYS (-page-token-keys)"
	if c.PageTokenKeysFile != "" {
		if spec != "" {
			return nil, errors.New("PAGE_TOKEN_KEYS (-page-token-keys) and PAGE_TOKEN_KEYS_FILE (-page-token-keys-file): set one, not both")
		}
		b, err := os.ReadFile(c.PageTokenKeysFile)
		if err != nil {
			return nil, fmt.Errorf("PAGE_TOKEN_KEYS_FILE (-page-token-keys-file): %v", err)
		}
		spec, name = string(b), fmt.Sprintf("PAGE_TOKEN_KEYS_FILE (-page-token-keys-file) %s", c.PageTokenKeysFile)
	} else if spec == "" {
		return nil, nil
	}
	keys, err := pagetoken.ParseKeyring(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return keys, nil
}

func validateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port, e.g. :50051 or 127.0.0.1:50051")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}
