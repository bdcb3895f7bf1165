// Package devpki makes throwaway credentials for development and tests: a
// CA, server and client certificates with platforma's SPIFFE IDs, a JWT
// signing key with its JWKS, and tokens. Nothing here is for production:
// the CA key lives in memory (Generate does not even write it) and every
// certificate is valid for a year.
//
// `make run` calls Generate(".data/pki") and passes Files.ServeFlags to
// every service and Files.RelayFlags to oplog; tests use New and
// DialOptions.
package devpki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Defaults of New's issuer and audience (and of Generate's).
const (
	Issuer   = "https://platforma.dev.local"
	Audience = "platforma"
)

// validity of every certificate.
const validity = 365 * 24 * time.Hour

// PKI is a CA and a JWT signing key, in memory.
type PKI struct {
	CA       *x509.Certificate
	CAPEM    []byte
	caKey    crypto.Signer
	jwtKey   *ecdsa.PrivateKey
	KeyID    string
	Issuer   string
	Audience string
}

// New makes a CA and an ES256 signing key; issuer and audience ("" for the
// defaults) go into the tokens.
func New(issuer, audience string) (*PKI, error) {
	if issuer == "" {
		issuer = Issuer
	}
	if audience == "" {
		audience = Audience
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "platforma dev CA", Organization: []string{"platforma"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &PKI{
		CA:       ca,
		CAPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		caKey:    caKey,
		jwtKey:   jwtKey,
		KeyID:    "dev-" + serial().Text(36)[:8],
		Issuer:   issuer,
		Audience: audience,
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// CertPool trusts the CA.
func (p *PKI) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// ServerCert is a server certificate for hosts (names and IPs; none:
// localhost, 127.0.0.1 and ::1).
func (p *PKI) ServerCert(hosts ...string) (tls.Certificate, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return p.issue(tmpl, validity)
}

// ClientCert is a client certificate whose one URI SAN is spiffeID, e.g.
// auth.SPIFFEID("worker", "scraper-1").
func (p *PKI) ClientCert(spiffeID string) (tls.Certificate, error) {
	u, err := url.Parse(spiffeID)
	if err != nil {
		return tls.Certificate{}, err
	}
	return p.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: u.Path},
		URIs:        []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, validity)
}

// Issue signs tmpl (its serial, validity and key usage are filled in when
// unset) for a new P-256 key, valid for d from an hour ago.
func (p *PKI) Issue(tmpl *x509.Certificate, d time.Duration) (tls.Certificate, error) {
	return p.issue(tmpl, d)
}

func (p *PKI) issue(tmpl *x509.Certificate, d time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = serial()
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = tmpl.NotBefore.Add(d)
	}
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, key.Public(), p.caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// JWKS is the public key set that verifies Token's tokens.
func (p *PKI) JWKS() []byte {
	k, err := jwkset.NewJWKFromKey(p.jwtKey.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: p.KeyID, ALG: jwkset.AlgES256, USE: jwkset.UseSig},
	})
	if err != nil {
		panic(err) // a P-256 public key always marshals
	}
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{k.Marshal()}})
	if err != nil {
		panic(err)
	}
	return b
}

// Token is an ES256 token for subject with roles (names: worker, service,
// operator, admin) in the "roles" claim, valid for ttl.
func (p *PKI) Token(subject string, roles []string, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss":   p.Issuer,
		"aud":   p.Audience,
		"sub":   subject,
		"iat":   now.Unix(),
		"exp":   now.Add(ttl).Unix(),
		"roles": roles,
	})
	t.Header["kid"] = p.KeyID
	return t.SignedString(p.jwtKey)
}

// Sign signs any claims with the token key (ES256, with its kid): tests
// make tokens of other issuers, audiences or lifetimes with it.
func (p *PKI) Sign(claims map[string]any) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(claims))
	t.Header["kid"] = p.KeyID
	return t.SignedString(p.jwtKey)
}

// DialOptions are a client's options for a server with a certificate of
// this CA: TLS, the client certificate cert (nil: none) and the bearer
// token (empty: none) with every call.
func (p *PKI) DialOptions(cert *tls.Certificate, token string) []grpc.DialOption {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.CertPool()}
	if cert != nil {
		c := *cert
		cfg.Certificates = []tls.Certificate{c}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(Bearer{Token: token, Secure: true}))
	}
	return opts
}

// Bearer sends "authorization: Bearer <Token>" with every call. Secure
// makes gRPC refuse to send it over a connection without TLS; tests of
// -insecure servers leave it false.
type Bearer struct {
	Token  string
	Secure bool
}

// GetRequestMetadata is credentials.PerRPCCredentials'.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity is credentials.PerRPCCredentials'.
func (b Bearer) RequireTransportSecurity() bool { return b.Secure }

// WriteKeyPair writes a certificate (PEM) and its key (PKCS #8 PEM, mode
// 0600).
func WriteKeyPair(certFile, keyFile string, c tls.Certificate) error {
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return err
	}
	if err := writeFile(certFile, certPEM); err != nil {
		return err
	}
	return writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

// writeFile writes data with mode 0600 through a temporary file and a
// rename, so a reader never sees half a file.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteFile writes data with mode 0600, atomically (see WriteKeyPair).
func WriteFile(path string, data []byte) error { return writeFile(path, data) }

// Files are what Generate wrote, by path.
type Files struct {
	Dir string
	// CA is the CA certificate (ca.pem): clients verify the servers with
	// it, and servers the client certificates.
	CA string
	// ServerCert, ServerKey: every service's certificate (localhost,
	// 127.0.0.1, ::1 and the extra hosts).
	ServerCert, ServerKey string
	// WorkerCert, WorkerKey: spiffe://platforma/worker/dev-worker.
	WorkerCert, WorkerKey string
	// OplogCert, OplogKey: spiffe://platforma/service/oplog, the relay's
	// identity towards ProfileService.
	OplogCert, OplogKey string
	// JWKS verifies the tokens.
	JWKS string
	// OperatorToken, AdminToken: files holding a bearer token each
	// (subjects dev-operator and dev-admin), valid for 30 days.
	OperatorToken, AdminToken string
	// WorkerToken: a bearer token with the worker role (subject
	// dev-worker), for a worker that cannot present a client certificate,
	// e.g. against a server run with -insecure.
	WorkerToken      string
	Issuer, Audience string
}

// Generate writes fresh development credentials into dir (created with
// mode 0700; every file 0600): ca.pem, server.pem/server-key.pem,
// worker.pem/worker-key.pem, oplog-service.pem/oplog-service-key.pem,
// jwks.json, operator.token, admin.token and worker.token. extraHosts
// are added to the server certificate. The CA's key is never written: run
// it again for new certificates.
func Generate(dir string, extraHosts ...string) (*Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p, err := New("", "")
	if err != nil {
		return nil, err
	}
	f := &Files{
		Dir:           dir,
		CA:            filepath.Join(dir, "ca.pem"),
		ServerCert:    filepath.Join(dir, "server.pem"),
		ServerKey:     filepath.Join(dir, "server-key.pem"),
		WorkerCert:    filepath.Join(dir, "worker.pem"),
		WorkerKey:     filepath.Join(dir, "worker-key.pem"),
		OplogCert:     filepath.Join(dir, "oplog-service.pem"),
		OplogKey:      filepath.Join(dir, "oplog-service-key.pem"),
		JWKS:          filepath.Join(dir, "jwks.json"),
		OperatorToken: filepath.Join(dir, "operator.token"),
		AdminToken:    filepath.Join(dir, "admin.token"),
		WorkerToken:   filepath.Join(dir, "worker.token"),
		Issuer:        p.Issuer,
		Audience:      p.Audience,
	}
	server, err := p.ServerCert(append([]string{"localhost", "127.0.0.1", "::1"}, extraHosts...)...)
	if err != nil {
		return nil, err
	}
	worker, err := p.ClientCert("spiffe://platforma/worker/dev-worker")
	if err != nil {
		return nil, err
	}
	oplog, err := p.ClientCert("spiffe://platforma/service/oplog")
	if err != nil {
		return nil, err
	}
	const tokenTTL = 30 * 24 * time.Hour
	operatorToken, err := p.Token("dev-operator", []string{"operator"}, tokenTTL)
	if err != nil {
		return nil, err
	}
	adminToken, err := p.Token("dev-admin", []string{"admin"}, tokenTTL)
	if err != nil {
		return nil, err
	}
	workerToken, err := p.Token("dev-worker", []string{"worker"}, tokenTTL)
	if err != nil {
		return nil, err
	}
	for _, w := range []func() error{
		func() error { return writeFile(f.CA, p.CAPEM) },
		func() error { return WriteKeyPair(f.ServerCert, f.ServerKey, server) },
		func() error { return WriteKeyPair(f.WorkerCert, f.WorkerKey, worker) },
		func() error { return WriteKeyPair(f.OplogCert, f.OplogKey, oplog) },
		func() error { return writeFile(f.JWKS, p.JWKS()) },
		func() error { return writeFile(f.OperatorToken, []byte(operatorToken+"\n")) },
		func() error { return writeFile(f.AdminToken, []byte(adminToken+"\n")) },
		func() error { return writeFile(f.WorkerToken, []byte(workerToken+"\n")) },
	} {
		if err := w(); err != nil {
			return nil, fmt.Errorf("devpki: %w", err)
		}
	}
	return f, nil
}

// ServeFlags are the flags every service's `serve` needs for these files:
// TLS, client certificates of this CA, and tokens of this JWKS.
func (f *Files) ServeFlags() []string {
	return []string{
		"-tls-cert-file=" + f.ServerCert,
		"-tls-key-file=" + f.ServerKey,
		"-tls-client-ca-file=" + f.CA,
		"-jwks-file=" + f.JWKS,
		"-jwt-issuer=" + f.Issuer,
		"-jwt-audience=" + f.Audience,
	}
}

// RelayFlags are oplog's flags for calling ProfileService over mutual TLS
// as spiffe://platforma/service/oplog.
func (f *Files) RelayFlags() []string {
	return []string{
		"-profile-tls-ca-file=" + f.CA,
		"-profile-tls-cert-file=" + f.OplogCert,
		"-profile-tls-key-file=" + f.OplogKey,
	}
}

// AsEnv turns flags (-some-flag=value) into the environment variables
// that set them (SOME_FLAG=value): how scripts pass ServeFlags and
// RelayFlags without showing them in ps.
func AsEnv(flags []string) []string {
	env := make([]string, 0, len(flags))
	for _, f := range flags {
		name, value, _ := strings.Cut(strings.TrimPrefix(f, "-"), "=")
		env = append(env, strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+"="+value)
	}
	return env
}
