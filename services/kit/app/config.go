package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/services/kit/logging"
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
	ShutdownTimeout  time.Duration
	HealthInterval   time.Duration
	DBMaxConns       int
	DBConnectTimeout time.Duration
	MaxRecvMsgBytes  int
}

func (c *serveConfig) register(fs *flag.FlagSet, svc Service) {
	c.commonConfig.register(fs)
	fs.StringVar(&c.ListenAddr, "listen-addr", svc.DefaultListenAddr, "gRPC listen address, host:port")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", svc.DefaultMetricsAddr, "Prometheus /metrics listen address, host:port")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight calls may run after SIGTERM before they are cut off")
	fs.DurationVar(&c.HealthInterval, "health-interval", 2*time.Second, "how often the database is pinged for gRPC health")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", 16, "maximum connections in the pool")
	fs.DurationVar(&c.DBConnectTimeout, "db-connect-timeout", 5*time.Second, "timeout for opening one database connection")
	maxMsg := 4 << 20
	if svc.DefaultMaxRecvMsgBytes > 0 {
		maxMsg = svc.DefaultMaxRecvMsgBytes
	}
	fs.IntVar(&c.MaxRecvMsgBytes, "max-recv-msg-bytes", maxMsg, "largest request message accepted, in bytes")
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
	for _, a := range []struct{ name, value string }{
		{"LISTEN_ADDR (-listen-addr)", c.ListenAddr},
		{"METRICS_ADDR (-metrics-addr)", c.MetricsAddr},
	} {
		if err := validateAddr(a.value); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", a.name, a.value, err))
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
		{"MAX_RECV_MSG_BYTES (-max-recv-msg-bytes) must be between 1024 and 268435456", c.MaxRecvMsgBytes >= 1024 && c.MaxRecvMsgBytes <= 256<<20},
	}
	for _, p := range positive {
		if !p.ok {
			errs = append(errs, errors.New(p.name))
		}
	}
	return errors.Join(errs...)
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
