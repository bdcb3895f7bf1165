package app

import (
	"bytes"
	"context"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/server"
)

var testService = Service{
	Name:               "testsvc",
	DefaultListenAddr:  ":50099",
	DefaultMetricsAddr: ":9499",
	Migrations:         migrations.Profile,
	Register:           func(server.Registrar, db.Pools) error { return nil },
}

func TestBadConfigurationIsRefusedWithTheVariableNamed(t *testing.T) {
	t.Parallel()
	const okURL = "postgres://u@localhost:5432/db"
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		code     int
		contains []string
		hides    string
	}{
		{name: "no command", code: 2, contains: []string{"serve|migrate"}},
		{name: "unknown command", args: []string{"serv"}, code: 2, contains: []string{`unknown command "serv"`}},
		{name: "help", args: []string{"help"}, code: 0, contains: []string{"serve|migrate"}},
		{name: "flag help lists env names", args: []string{"serve", "-h"}, code: 0, contains: []string{"-listen-addr, LISTEN_ADDR (default :50099)", "DATABASE_URL"}},
		{name: "missing database url", args: []string{"serve"}, code: 2, contains: []string{"DATABASE_URL (-database-url) is required"}},
		{name: "missing database url for migrate", args: []string{"migrate"}, code: 2, contains: []string{"DATABASE_URL (-database-url) is required"}},
		{
			name: "unparseable database url keeps the password secret",
			args: []string{"serve"}, env: map[string]string{"DATABASE_URL": "postgres://u:hunter2@localhost:notaport/db"},
			code: 2, contains: []string{"DATABASE_URL (-database-url) is invalid"}, hides: "hunter2",
		},
		{
			name: "listen address without port",
			args: []string{"serve"}, env: map[string]string{"DATABASE_URL": okURL, "LISTEN_ADDR": "localhost"},
			code: 2, contains: []string{`LISTEN_ADDR (-listen-addr) "localhost": want host:port`},
		},
		{
			name: "metrics port out of range",
			args: []string{"serve", "-metrics-addr", ":99999"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{`METRICS_ADDR (-metrics-addr) ":99999": port must be`},
		},
		{
			name: "health address without port",
			args: []string{"serve"}, env: map[string]string{"DATABASE_URL": okURL, "HEALTH_ADDR": "0.0.0.0"},
			code: 2, contains: []string{`HEALTH_ADDR (-health-addr) "0.0.0.0": want host:port`},
		},
		{
			name: "env value of the wrong type",
			args: []string{"serve"}, env: map[string]string{"DATABASE_URL": okURL, "SHUTDOWN_TIMEOUT": "soon"},
			code: 2, contains: []string{`SHUTDOWN_TIMEOUT="soon"`},
		},
		{
			name: "zero durations and pool size",
			args: []string{"serve", "-health-interval=0s", "-db-max-conns=0"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{"HEALTH_INTERVAL (-health-interval) must be positive", "DB_MAX_CONNS (-db-max-conns) must be between 1 and 10000"},
		},
		{
			name: "unparseable read database url keeps the password secret",
			args: []string{"serve", "-insecure"}, env: map[string]string{"DATABASE_URL": okURL, "READ_DATABASE_URL": "postgres://u:hunter2@replica:notaport/db"},
			code: 2, contains: []string{"READ_DATABASE_URL (-read-database-url) is invalid"}, hides: "hunter2",
		},
		{
			name: "read max lag not positive",
			args: []string{"serve", "-insecure", "-read-max-lag=0s"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{"READ_MAX_LAG (-read-max-lag) must be positive"},
		},
		{
			name: "read max lag of the wrong type",
			args: []string{"serve", "-insecure"}, env: map[string]string{"DATABASE_URL": okURL, "READ_MAX_LAG": "10"},
			code: 2, contains: []string{`READ_MAX_LAG="10"`},
		},
		{
			name: "every problem reported at once",
			args: []string{"serve"}, env: map[string]string{"LISTEN_ADDR": "x", "LOG_LEVEL": "loud", "LOG_FORMAT": "xml"},
			code: 2, contains: []string{"DATABASE_URL", "LISTEN_ADDR", "LOG_LEVEL", "LOG_FORMAT"},
		},
		{name: "stray argument", args: []string{"migrate", "now"}, code: 2, contains: []string{"unexpected arguments: now"}},
		{
			name: "transport limits out of range, all named at once",
			args: []string{"serve", "-max-concurrent-streams=0", "-max-header-list-bytes=100", "-keepalive-time=100ms", "-recv-timeout=0s"},
			env: map[string]string{
				"DATABASE_URL": okURL, "KEEPALIVE_TIMEOUT": "0s", "MAX_CONNECTION_IDLE": "-1s", "MAX_CONNECTION_AGE": "0s",
				"MAX_CONNECTION_AGE_GRACE": "0s", "RECV_IDLE_TIMEOUT": "0s", "HANDSHAKE_TIMEOUT": "0s",
			},
			code: 2, contains: []string{
				"MAX_CONCURRENT_STREAMS (-max-concurrent-streams) must be between 1 and 65536",
				"MAX_HEADER_LIST_BYTES (-max-header-list-bytes) must be between 4096 and 16777216",
				"HANDSHAKE_TIMEOUT (-handshake-timeout) must be positive",
				"KEEPALIVE_TIME (-keepalive-time) must be at least 1s",
				"KEEPALIVE_TIMEOUT (-keepalive-timeout) must be positive",
				"MAX_CONNECTION_IDLE (-max-connection-idle) must be positive",
				"MAX_CONNECTION_AGE (-max-connection-age) must be positive",
				"MAX_CONNECTION_AGE_GRACE (-max-connection-age-grace) must be positive",
				"RECV_TIMEOUT (-recv-timeout) must be positive",
				"RECV_IDLE_TIMEOUT (-recv-idle-timeout) must be positive",
			},
		},
		{
			name: "no TLS and no -insecure: refused, saying how",
			args: []string{"serve"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{"TLS_CERT_FILE (-tls-cert-file) and TLS_KEY_FILE (-tls-key-file) are required", "INSECURE=true"},
		},
		{
			name: "-insecure with TLS files",
			args: []string{"serve", "-insecure", "-tls-cert-file=c.pem", "-tls-key-file=k.pem"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{"INSECURE (-insecure) serves plaintext: TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE must not be set with it"},
		},
		{
			name: "TLS files that do not load",
			args: []string{"serve", "-tls-cert-file=/nonexistent/c.pem", "-tls-key-file=/nonexistent/k.pem", "-tls-client-ca-file=/nonexistent/ca.pem"},
			env:  map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{"TLS_CERT_FILE (-tls-cert-file), TLS_KEY_FILE (-tls-key-file): stat /nonexistent/c.pem: no such file", "TLS_CLIENT_CA_FILE (-tls-client-ca-file): stat /nonexistent/ca.pem: no such file"},
		},
		{
			name: "a JWKS without issuer and audience, and two JWKS",
			args: []string{"serve", "-insecure", "-jwks-file=jwks.json", "-jwks-url=https://idp.example/jwks"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{
				"JWKS_FILE (-jwks-file) and JWKS_URL (-jwks-url): set one, not both",
				"JWT_ISSUER (-jwt-issuer) is required with a JWKS",
				"JWT_AUDIENCE (-jwt-audience) is required with a JWKS",
			},
		},
		{
			name: "a JWKS over plain http from another machine",
			args: []string{"serve", "-insecure", "-jwks-url=http://idp.example/jwks", "-jwt-issuer=i", "-jwt-audience=a"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{`JWKS_URL (-jwks-url) "http://idp.example/jwks": must be https`},
		},
		{
			name: "issuer without JWKS",
			args: []string{"serve", "-insecure"}, env: map[string]string{"DATABASE_URL": okURL, "JWT_ISSUER": "https://idp"},
			code: 2, contains: []string{"JWT_ISSUER (-jwt-issuer) and JWT_AUDIENCE (-jwt-audience) need JWKS_FILE (-jwks-file) or JWKS_URL (-jwks-url)"},
		},
		{
			name: "a JWKS file that does not load",
			args: []string{"serve", "-insecure", "-jwks-file=/nonexistent/jwks.json", "-jwt-issuer=i", "-jwt-audience=a"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{"JWKS_FILE (-jwks-file): JWKS /nonexistent/jwks.json: open"},
		},
		{
			name: "pprof on every interface",
			args: []string{"serve", "-insecure", "-pprof-addr=:6060"}, env: map[string]string{"DATABASE_URL": okURL},
			code: 2, contains: []string{`PPROF_ADDR (-pprof-addr) ":6060": must be a loopback address`},
		},
		{
			name: "rate limits that do not parse",
			args: []string{"serve", "-insecure", "-rate-limit-reads=fast"}, env: map[string]string{"DATABASE_URL": okURL, "RATE_LIMIT_WRITES": "10/d"},
			code: 2, contains: []string{`"fast": want <n>/<s|m|h>[:<burst>]`},
		},
		{
			name: "flag help lists the security flags",
			args: []string{"serve", "-h"}, code: 0,
			contains: []string{
				"-insecure, INSECURE (default false)",
				"-tls-cert-file, TLS_CERT_FILE",
				"-tls-client-ca-file, TLS_CLIENT_CA_FILE",
				"-jwks-url, JWKS_URL",
				"-jwt-roles-claim, JWT_ROLES_CLAIM (default roles)",
				"-rate-limit-writes, RATE_LIMIT_WRITES (default 2000/s:4000)",
				"-rate-limit-reads, RATE_LIMIT_READS (default 500/s:1000)",
				"-rate-limit-admin, RATE_LIMIT_ADMIN (default 10/s:20)",
				"-pprof-addr, PPROF_ADDR",
			},
		},
		{
			name: "a limit of the wrong type",
			args: []string{"serve"}, env: map[string]string{"DATABASE_URL": okURL, "MAX_CONCURRENT_STREAMS": "many"},
			code: 2, contains: []string{`MAX_CONCURRENT_STREAMS="many"`},
		},
		{
			name: "flag help lists the limits",
			args: []string{"serve", "-h"}, code: 0,
			contains: []string{
				"-max-concurrent-streams, MAX_CONCURRENT_STREAMS (default 256)",
				"-max-header-list-bytes, MAX_HEADER_LIST_BYTES (default 16384)",
				"-recv-timeout, RECV_TIMEOUT (default 10s)",
				"-recv-idle-timeout, RECV_IDLE_TIMEOUT (default 30s)",
				"-max-connection-age, MAX_CONNECTION_AGE (default 30m0s)",
			},
		},
		{
			name: "flag help lists the read replica's flags",
			args: []string{"serve", "-h"}, code: 0,
			contains: []string{"-read-database-url, READ_DATABASE_URL\n", "-read-max-lag, READ_MAX_LAG (default 10s)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			code := Run(context.Background(), testService, Env{
				Args:   tt.args,
				Getenv: func(k string) string { return tt.env[k] },
				Stderr: &stderr,
			})
			assert.Equal(t, tt.code, code, stderr.String())
			for _, want := range tt.contains {
				assert.Contains(t, stderr.String(), want)
			}
			if tt.hides != "" {
				assert.NotContains(t, stderr.String(), tt.hides)
			}
		})
	}
}

func TestFlagBeatsEnvBeatsDefault(t *testing.T) {
	t.Parallel()
	var cfg serveConfig
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	cfg.register(fs, testService)
	env := map[string]string{"LISTEN_ADDR": ":1111", "METRICS_ADDR": ":2222", "SHUTDOWN_TIMEOUT": "7s"}
	require.NoError(t, parseFlags(fs, []string{"-listen-addr", ":3333"}, func(k string) string { return env[k] }))

	assert.Equal(t, ":3333", cfg.ListenAddr, "flag wins over env")
	assert.Equal(t, ":2222", cfg.MetricsAddr, "env wins over default")
	assert.Equal(t, 7*time.Second, cfg.ShutdownTimeout)
	assert.Equal(t, 2*time.Second, cfg.HealthInterval, "default when neither is given")
}

func TestLimitsFromFlagsAndEnv(t *testing.T) {
	t.Parallel()
	var cfg serveConfig
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	cfg.register(fs, testService)
	env := map[string]string{"MAX_CONCURRENT_STREAMS": "64", "RECV_IDLE_TIMEOUT": "45s"}
	require.NoError(t, parseFlags(fs, []string{"-recv-timeout=3s", "-max-connection-age=1h"}, func(k string) string { return env[k] }))

	want := server.DefaultLimits()
	want.MaxConcurrentStreams = 64
	want.RecvIdleTimeout = 45 * time.Second
	want.RecvTimeout = 3 * time.Second
	want.MaxConnectionAge = time.Hour
	assert.Equal(t, want, cfg.limits(), "flags and env over the defaults")
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "DATABASE_URL", EnvName("database-url"))
	assert.Equal(t, "MAX_RECV_MSG_BYTES", EnvName("max-recv-msg-bytes"))
}
