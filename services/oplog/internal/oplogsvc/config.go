package oplogsvc

import (
	"errors"
	"flag"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/platforma/platforma/services/oplog/internal/lifecycle"

	"github.com/platforma/platforma/services/kit/pagetoken"
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

	// Lifecycle is the op log's life cycle: archive, export, retention
	// (package lifecycle). `serve` runs it daily when its database URL is
	// set.
	Lifecycle lifecycle.Config

	// PageTokens signs and checks the page tokens of ListOperationLogs and
	// ListLoginDeadLetters. Not a flag: app passes the ring of
	// -page-token-keys. nil: a random key of this Server.
	PageTokens *pagetoken.Keyring

	// Logger is where the service, its writer and its relay log. Not a
	// flag: Register fills it with the server's logger when nil; a
	// Server made by New without one logs to slog.Default(), so its
	// warnings are never lost silently.
	Logger *slog.Logger
	// Now is the service's clock: the backfill window, the query windows
	// and partition maintenance read it. Not a flag (tests move it). nil:
	// time.Now.
	Now func() time.Time
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
	c.Lifecycle.RegisterFlags(fs)
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
		// A gRPC target names its resolver: dns:///profile:50051, or
		// dns://10.0.0.10:53/profile:50051 with its own DNS server.
		check(err == nil || strings.Contains(c.ProfileAddr, "://"),
			"PROFILE_ADDR (-profile-addr) must be host:port or a gRPC target such as dns:///profile:50051")
	}
	errs = append(errs, c.ProfileTLS.validate(c.ProfileAddr)...)
	check(c.LoginRelayBatch >= 1 && c.LoginRelayBatch <= 1000, "LOGIN_RELAY_BATCH (-login-relay-batch) must be between 1 and 1000")
	check(c.LoginRelayInterval >= time.Millisecond && c.LoginRelayInterval <= time.Minute,
		"LOGIN_RELAY_INTERVAL (-login-relay-interval) must be between 1ms and 1m")
	check(c.MetricsMaxErrorTypes >= 0 && c.MetricsMaxErrorTypes <= 1000, "METRICS_MAX_ERROR_TYPES (-metrics-max-error-types) must be between 0 and 1000")
	check(c.MetricsMaxProxies >= 0 && c.MetricsMaxProxies <= 10000, "METRICS_MAX_PROXIES (-metrics-max-proxies) must be between 0 and 10000")
	if c.Lifecycle.DatabaseURL != "" { // the policy matters where the life cycle runs
		if err := c.Lifecycle.Validate(c.Backfill); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
