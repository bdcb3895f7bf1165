package apptest

import (
	"context"
	"crypto/tls"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/auth/devpki"
)

// Services run by this package are secure by default, as the binaries
// are: TLS with a certificate of the test CA, client certificates of that
// CA, bearer tokens of its JWKS. Conn (and DialOptions) present a worker's
// certificate and a token with every role, so tests call any method.
// Rate limits are off unless a test's flags set them.
//
// A test that passes -insecure gets a plaintext server; its Conn sends the
// token in clear text (the only credential plaintext allows).

// AllRolesSubject is the subject of the token of Conn.
const AllRolesSubject = "apptest"

// testCreds are made once per test binary: every server of a test trusts
// the same CA, so one service can call another (the OpLog relay).
type testCreds struct {
	pki    *devpki.PKI
	server tls.Certificate // localhost, 127.0.0.1, ::1
	worker tls.Certificate // spiffe://platforma/worker/apptest
	relay  tls.Certificate // spiffe://platforma/service/oplog
	token  string          // every role
}

var sharedCreds = sync.OnceValues(func() (*testCreds, error) {
	p, err := devpki.New("", "")
	if err != nil {
		return nil, err
	}
	c := &testCreds{pki: p}
	if c.server, err = p.ServerCert(); err != nil {
		return nil, err
	}
	if c.worker, err = p.ClientCert(auth.SPIFFEID("worker", "apptest")); err != nil {
		return nil, err
	}
	if c.relay, err = p.ClientCert(auth.SPIFFEID("service", "oplog")); err != nil {
		return nil, err
	}
	if c.token, err = p.Token(AllRolesSubject, []string{"worker", "service", "operator", "admin"}, 24*time.Hour); err != nil {
		return nil, err
	}
	return c, nil
})

func creds(t testing.TB) *testCreds {
	t.Helper()
	c, err := sharedCreds()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// PKI is the CA and token issuer every server of this package trusts:
// tests make other identities' certificates and tokens with it.
func PKI(t testing.TB) *devpki.PKI { return creds(t).pki }

// Token is a bearer token of PKI for subject with roles, valid for an
// hour.
func Token(t testing.TB, subject string, roles ...auth.Role) string {
	t.Helper()
	var names []string
	for _, r := range roles {
		names = append(names, r.String())
	}
	tok, err := PKI(t).Token(subject, names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// DialOptions connect to a server of this package as the identity of
// cert (nil: no certificate) with token (empty: none).
func DialOptions(t testing.TB, cert *tls.Certificate, token string) []grpc.DialOption {
	return PKI(t).DialOptions(cert, token)
}

// securityEnv adds the security settings of `serve` to env (each only
// when flags do not set it) and returns the client's dial options.
func securityEnv(t *testing.T, env map[string]string, flags []string) []grpc.DialOption {
	t.Helper()
	c := creds(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := devpki.WriteFile(path, data); err != nil {
			t.Fatal(err)
		}
		return path
	}
	pair := func(name string, cert tls.Certificate) (string, string) {
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := devpki.WriteKeyPair(certFile, keyFile, cert); err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile
	}
	ca := write("ca.pem", c.pki.CAPEM)
	if !flagGiven(flags, "jwks-url") {
		env["JWKS_FILE"] = write("jwks.json", c.pki.JWKS())
	}
	env["JWT_ISSUER"], env["JWT_AUDIENCE"] = c.pki.Issuer, c.pki.Audience
	env["RATE_LIMIT_WRITES"], env["RATE_LIMIT_READS"], env["RATE_LIMIT_ADMIN"] = "0", "0", "0"
	// The OpLog relay's identity towards ProfileService (other services
	// have no such flags and ignore these).
	if !flagSet(flags, "profile-insecure") {
		env["PROFILE_TLS_CA_FILE"] = ca
		env["PROFILE_TLS_CERT_FILE"], env["PROFILE_TLS_KEY_FILE"] = pair("relay", c.relay)
	}
	if flagSet(flags, "insecure") {
		return []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(devpki.Bearer{Token: c.token}),
		}
	}
	env["TLS_CERT_FILE"], env["TLS_KEY_FILE"] = pair("server", c.server)
	env["TLS_CLIENT_CA_FILE"] = ca
	return c.pki.DialOptions(&c.worker, c.token)
}

// flagGiven reports whether flags set name, to any value.
func flagGiven(flags []string, name string) bool {
	for _, f := range flags {
		if n, _, _ := strings.Cut(strings.TrimLeft(f, "-"), "="); n == name {
			return true
		}
	}
	return false
}

// flagSet reports whether flags turn the boolean flag name on.
func flagSet(flags []string, name string) bool {
	for _, f := range flags {
		n, v, hasValue := strings.Cut(strings.TrimLeft(f, "-"), "=")
		if n == name && (!hasValue || v == "true" || v == "1") {
			return true
		}
	}
	return false
}

// inProcessSecurity is Serve's TLS, Auth and client credentials.
func inProcessSecurity(t testing.TB) (*tls.Config, *auth.Auth, []grpc.DialOption) {
	t.Helper()
	c := creds(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a, err := auth.New(ctx, auth.Config{
		JWT:    &auth.JWTConfig{JWKS: c.pki.JWKS(), Issuer: c.pki.Issuer, Audience: c.pki.Audience},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.server},
		ClientCAs:    c.pki.CertPool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	return tlsCfg, a, c.pki.DialOptions(&c.worker, c.token)
}
