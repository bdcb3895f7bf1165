package oplogsvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/platforma/platforma/services/kit/tlsfiles"
)

// ProfileTLS is how the login relay authenticates to ProfileService:
// mutual TLS with the certificate of spiffe://platforma/service/oplog
// (role service, which may call BatchRecordLoginResults), and/or a bearer
// token. Plaintext only with Insecure.
type ProfileTLS struct {
	CAFile    string
	CertFile  string
	KeyFile   string
	TokenFile string
	Insecure  bool
}

func (p *ProfileTLS) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&p.CAFile, "profile-tls-ca-file", "", "CA bundle (PEM) verifying ProfileService's certificate; empty: the system's roots")
	fs.StringVar(&p.CertFile, "profile-tls-cert-file", "", "the relay's client certificate (PEM) towards ProfileService, with the URI SAN spiffe://platforma/service/oplog; reloaded when the file changes")
	fs.StringVar(&p.KeyFile, "profile-tls-key-file", "", "the key of -profile-tls-cert-file (PEM)")
	fs.StringVar(&p.TokenFile, "profile-token-file", "", "a bearer token (a JWT with the role service) the relay sends to ProfileService, read again when the file changes; instead of or besides the client certificate")
	fs.BoolVar(&p.Insecure, "profile-insecure", false, "call ProfileService over plaintext (development only; the relay can then only authenticate with -profile-token-file)")
}

// validate checks the settings; they matter only with a PROFILE_ADDR.
func (p *ProfileTLS) validate(profileAddr string) []error {
	if profileAddr == "" {
		return nil
	}
	var errs []error
	if p.Insecure && (p.CAFile != "" || p.CertFile != "" || p.KeyFile != "") {
		errs = append(errs, errors.New("PROFILE_INSECURE (-profile-insecure) is plaintext: PROFILE_TLS_CA_FILE, PROFILE_TLS_CERT_FILE and PROFILE_TLS_KEY_FILE must not be set with it"))
	}
	if (p.CertFile == "") != (p.KeyFile == "") {
		errs = append(errs, errors.New("PROFILE_TLS_CERT_FILE (-profile-tls-cert-file) and PROFILE_TLS_KEY_FILE (-profile-tls-key-file) go together"))
	}
	if p.CertFile == "" && p.TokenFile == "" {
		errs = append(errs, errors.New("PROFILE_ADDR is set: the relay needs a credential for ProfileService: PROFILE_TLS_CERT_FILE and PROFILE_TLS_KEY_FILE (spiffe://platforma/service/oplog), or PROFILE_TOKEN_FILE"))
	}
	return errs
}

// dialOptions are the relay connection's transport and per-call
// credentials.
func (p *ProfileTLS) dialOptions(log *slog.Logger) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if p.Insecure {
		log.Warn("PROFILE_INSECURE: the login relay calls ProfileService over plaintext")
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		cfg, err := tlsfiles.ClientConfig(p.CAFile, p.CertFile, p.KeyFile, log)
		if err != nil {
			return nil, fmt.Errorf("PROFILE_TLS_*: %w", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if p.TokenFile != "" {
		tf := &tokenFile{path: p.TokenFile, secure: !p.Insecure}
		if _, err := tf.token(); err != nil {
			return nil, fmt.Errorf("PROFILE_TOKEN_FILE (-profile-token-file): %w", err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(tf))
	}
	return opts, nil
}

// tokenFile sends the token in a file as "authorization: Bearer", read
// again (at most every 5 s) when the file changes.
type tokenFile struct {
	path   string
	secure bool

	mu      sync.Mutex
	tok     string
	mod     time.Time
	checked time.Time
}

func (f *tokenFile) token() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tok != "" && time.Since(f.checked) < 5*time.Second {
		return f.tok, nil
	}
	f.checked = time.Now()
	fi, err := os.Stat(f.path)
	if err != nil {
		if f.tok != "" {
			return f.tok, nil
		}
		return "", err
	}
	if f.tok != "" && fi.ModTime().Equal(f.mod) {
		return f.tok, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("the file is empty")
	}
	f.tok, f.mod = tok, fi.ModTime()
	return tok, nil
}

func (f *tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := f.token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (f *tokenFile) RequireTransportSecurity() bool { return f.secure }
