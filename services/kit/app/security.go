package app

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/kit/tlsfiles"
)

// securityConfig is the `serve` flags of TLS, authentication, rate limits
// and pprof (README "Security").
type securityConfig struct {
	Insecure          bool
	TLSCertFile       string
	TLSKeyFile        string
	TLSClientCAFile   string
	TLSReloadInterval time.Duration

	JWKSFile            string
	JWKSURL             string
	JWKSRefreshInterval time.Duration
	JWTIssuer           string
	JWTAudience         string
	JWTRolesClaim       string

	RateLimitWrites auth.RateLimit
	RateLimitReads  auth.RateLimit
	RateLimitAdmin  auth.RateLimit

	PprofAddr string
}

func (c *securityConfig) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.Insecure, "insecure", false, "serve plaintext gRPC, without TLS (development only; logged as a warning): client certificates cannot work, bearer tokens travel in clear text")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "the server's certificate (PEM, with its chain); reloaded when the file changes (required unless -insecure)")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "the server certificate's private key (PEM); reloaded with the certificate (required unless -insecure)")
	fs.StringVar(&c.TLSClientCAFile, "tls-client-ca-file", "", "CA bundle (PEM) verifying client certificates (workers, services); client certificates are requested and verified when presented; reloaded when the file changes")
	fs.DurationVar(&c.TLSReloadInterval, "tls-reload-interval", tlsfiles.DefaultInterval, "how often the TLS files are checked for changes")
	fs.StringVar(&c.JWKSFile, "jwks-file", "", "JWKS (JSON key set) verifying operators' bearer tokens; read again every -jwks-refresh-interval")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "URL of the JWKS verifying bearer tokens (https; http only for loopback hosts); instead of -jwks-file")
	fs.DurationVar(&c.JWKSRefreshInterval, "jwks-refresh-interval", auth.DefaultJWKSRefresh, "how often the JWKS is read again (a token with an unknown key id triggers a refresh at once)")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", "the \"iss\" bearer tokens must have (required with a JWKS)")
	fs.StringVar(&c.JWTAudience, "jwt-audience", "", "the \"aud\" bearer tokens must include (required with a JWKS)")
	fs.StringVar(&c.JWTRolesClaim, "jwt-roles-claim", "roles", "the claim holding a token's roles (worker, service, operator, admin): an array or a space-separated string; a dotted path reaches into objects, e.g. realm_access.roles")
	d := auth.DefaultRateLimits()
	c.RateLimitWrites, c.RateLimitReads, c.RateLimitAdmin = d.Write, d.Read, d.Admin
	fs.Var(&c.RateLimitWrites, "rate-limit-writes", "per caller: write calls (Ingest streams, Record*, Upsert*), as <n>/<s|m|h>[:<burst>]; 0 = no limit")
	fs.Var(&c.RateLimitReads, "rate-limit-reads", "per caller: read calls (Get*, List*, stats); 0 = no limit")
	fs.Var(&c.RateLimitAdmin, "rate-limit-admin", "per caller: dead-letter calls (ListLoginDeadLetters, ReplayLoginDeadLetters); 0 = no limit")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "serve /debug/pprof/ on this loopback address, e.g. 127.0.0.1:6060; empty = off")
}

func (c *securityConfig) validate() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Insecure {
		if c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSClientCAFile != "" {
			add("INSECURE (-insecure) serves plaintext: TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE must not be set with it")
		}
	} else if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		add("TLS_CERT_FILE (-tls-cert-file) and TLS_KEY_FILE (-tls-key-file) are required: the server serves TLS only (plaintext, for development: INSECURE=true)")
	}
	if c.TLSReloadInterval <= 0 {
		add("TLS_RELOAD_INTERVAL (-tls-reload-interval) must be positive")
	}
	switch {
	case c.JWKSFile != "" && c.JWKSURL != "":
		add("JWKS_FILE (-jwks-file) and JWKS_URL (-jwks-url): set one, not both")
	case c.JWKSURL != "":
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			add("JWKS_URL (-jwks-url) %q: %v", c.JWKSURL, err)
		}
	}
	if c.jwks() {
		if c.JWTIssuer == "" {
			add("JWT_ISSUER (-jwt-issuer) is required with a JWKS: tokens of other issuers must not count")
		}
		if c.JWTAudience == "" {
			add("JWT_AUDIENCE (-jwt-audience) is required with a JWKS: tokens meant for other services must not count")
		}
	} else if c.JWTIssuer != "" || c.JWTAudience != "" {
		add("JWT_ISSUER (-jwt-issuer) and JWT_AUDIENCE (-jwt-audience) need JWKS_FILE (-jwks-file) or JWKS_URL (-jwks-url)")
	}
	if c.JWKSRefreshInterval < time.Second {
		add("JWKS_REFRESH_INTERVAL (-jwks-refresh-interval) must be at least 1s")
	}
	if c.JWTRolesClaim == "" {
		add("JWT_ROLES_CLAIM (-jwt-roles-claim) must not be empty")
	}
	if c.PprofAddr != "" {
		if err := server.CheckLoopback(c.PprofAddr); err != nil {
			add("PPROF_ADDR (-pprof-addr) %q: %v", c.PprofAddr, err)
		} else if err := validateAddr(c.PprofAddr); err != nil {
			add("PPROF_ADDR (-pprof-addr) %q: %v", c.PprofAddr, err)
		}
	}
	return errs
}

func (c *securityConfig) jwks() bool { return c.JWKSFile != "" || c.JWKSURL != "" }

// checkJWKSURL: keys fetched over plain http could be anyone's, except
// from this machine.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return errors.New("must be https (http only for loopback hosts)")
	default:
		return errors.New("must be https")
	}
}

// build loads the files and makes the server's TLS configuration (nil
// with -insecure) and its Auth. Its errors are configuration errors.
func (c *securityConfig) build(ctx context.Context, log *slog.Logger, methods auth.Table) (*tls.Config, *auth.Auth, error) {
	var errs []error
	var tlsCfg *tls.Config
	if !c.Insecure {
		pair, err := tlsfiles.LoadKeyPair(c.TLSCertFile, c.TLSKeyFile, c.TLSReloadInterval, log)
		if err != nil {
			errs = append(errs, fmt.Errorf("TLS_CERT_FILE (-tls-cert-file), TLS_KEY_FILE (-tls-key-file): %v", err))
		}
		var clientCAs *tlsfiles.Pool
		if c.TLSClientCAFile != "" {
			if clientCAs, err = tlsfiles.LoadPool(c.TLSClientCAFile, c.TLSReloadInterval, log); err != nil {
				errs = append(errs, fmt.Errorf("TLS_CLIENT_CA_FILE (-tls-client-ca-file): %v", err))
			}
		}
		if pair != nil {
			tlsCfg = tlsfiles.ServerConfig(pair, clientCAs)
		}
	}
	cfg := auth.Config{
		Methods:    methods,
		RateLimits: auth.RateLimits{Write: c.RateLimitWrites, Read: c.RateLimitReads, Admin: c.RateLimitAdmin},
		Logger:     log,
	}
	if c.jwks() {
		cfg.JWT = &auth.JWTConfig{
			JWKSFile:        c.JWKSFile,
			JWKSURL:         c.JWKSURL,
			Issuer:          c.JWTIssuer,
			Audience:        c.JWTAudience,
			RolesClaim:      c.JWTRolesClaim,
			RefreshInterval: c.JWKSRefreshInterval,
		}
	}
	a, err := auth.New(ctx, cfg)
	if err != nil {
		name := "JWKS_FILE (-jwks-file)"
		if c.JWKSURL != "" {
			name = "JWKS_URL (-jwks-url)"
		}
		errs = append(errs, fmt.Errorf("%s: %v", name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	if c.Insecure {
		log.Warn("serving plaintext gRPC (INSECURE=true): no TLS, so no client certificates; bearer tokens travel in clear text. For development only.")
	}
	if c.TLSClientCAFile == "" && !c.jwks() {
		log.Warn("no TLS_CLIENT_CA_FILE and no JWKS: no caller can authenticate; only health and reflection answer")
	}
	return tlsCfg, a, nil
}

// summary is the security set-up for the start-up log line, without
// secrets.
func (c *securityConfig) summary() []any {
	tokens := "off"
	if c.JWKSFile != "" {
		tokens = "jwks file " + c.JWKSFile
	} else if c.JWKSURL != "" {
		tokens = "jwks url " + c.JWKSURL
		if u, err := url.Parse(c.JWKSURL); err == nil {
			tokens = "jwks url " + u.Redacted() // no password of the URL in the log
		}
	}
	return []any{
		"tls", !c.Insecure,
		"client_certificates", c.TLSClientCAFile != "",
		"bearer_tokens", tokens,
		"rate_limits", strings.Join([]string{"writes " + c.RateLimitWrites.String(), "reads " + c.RateLimitReads.String(), "admin " + c.RateLimitAdmin.String()}, ", "),
	}
}
