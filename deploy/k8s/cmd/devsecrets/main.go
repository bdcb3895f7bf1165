// Command devsecrets writes the throwaway credentials of the dev overlay
// (overlays/dev/common/secrets): a CA, a server certificate per service for
// its in-cluster names, the login relay's and a worker's client
// certificates, a JWKS with operator, admin and worker tokens signed by its
// key, and page-token keys. The CA's and the JWT signing key's private
// halves are never written, so nothing more can be issued: run it again
// (and commit the result) to replace everything at once.
//
//	cd deploy/k8s && GOWORK=off go run ./cmd/devsecrets
//
// None of this is secret, by design: it is in the repository. Never use it
// outside a development cluster.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The values the dev overlay's configuration expects (JWT_ISSUER,
// JWT_AUDIENCE) and the namespace its Services live in.
const (
	namespace = "platforma"
	issuer    = "https://platforma.dev.local"
	audience  = "platforma"
	// Long enough that a dev cluster never meets an expired certificate;
	// the tests of the module fail a year before it happens.
	validity = 10 * 365 * 24 * time.Hour
)

var services = []string{"profile", "reviewmeta", "oplog"}

func main() {
	out := flag.String("out", "overlays/dev/common/secrets", "directory to write into")
	flag.Parse()
	if err := run(*out, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "devsecrets:", err)
		os.Exit(1)
	}
}

func run(dir string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	w := writer{dir: dir}

	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "platforma dev-only CA (key discarded)", Organization: []string{"platforma"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	w.pem("ca.crt", "CERTIFICATE", caDER)

	issue := func(name string, tmpl *x509.Certificate) error {
		key := newKey()
		tmpl.SerialNumber = serial()
		tmpl.NotBefore = now.Add(-time.Hour)
		tmpl.NotAfter = now.Add(validity)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		w.pem(name+".crt", "CERTIFICATE", der)
		w.pem(name+".key", "PRIVATE KEY", keyDER)
		return nil
	}

	for _, svc := range services {
		// Every name a client in the cluster may dial (the relay uses the
		// full one, dns:///profile.platforma.svc.cluster.local:50051), and
		// localhost for kubectl port-forward.
		dns := []string{svc, svc + "." + namespace, svc + "." + namespace + ".svc", svc + "." + namespace + ".svc.cluster.local", "localhost"}
		if err := issue(svc+"-tls", &x509.Certificate{
			Subject:     pkix.Name{CommonName: svc + "." + namespace + ".svc.cluster.local", Organization: []string{"platforma dev-only"}},
			DNSNames:    dns,
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return err
		}
	}
	// Client certificates: the identity is the one SPIFFE ID (README
	// "Security"), never the common name.
	for _, c := range []struct{ file, spiffe string }{
		{"oplog-relay", "spiffe://platforma/service/oplog"},
		{"worker", "spiffe://platforma/worker/dev-worker"},
	} {
		u, err := url.Parse(c.spiffe)
		if err != nil {
			return err
		}
		if err := issue(c.file, &x509.Certificate{
			Subject:     pkix.Name{CommonName: c.spiffe, Organization: []string{"platforma dev-only"}},
			URIs:        []*url.URL{u},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err != nil {
			return err
		}
	}

	// The JWKS and tokens signed with its key (ES256), which is then
	// forgotten.
	jwtKey := newKey()
	kid := "platforma-dev"
	jwks := map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
		"x": b64(jwtKey.PublicKey.X.FillBytes(make([]byte, 32))),
		"y": b64(jwtKey.PublicKey.Y.FillBytes(make([]byte, 32))),
	}}}
	jwksJSON, err := json.MarshalIndent(jwks, "", "  ")
	if err != nil {
		return err
	}
	w.file("jwks.json", append(jwksJSON, '\n'))
	for _, role := range []string{"operator", "admin", "worker"} {
		tok, err := token(jwtKey, kid, map[string]any{
			"iss": issuer, "aud": audience, "sub": "dev-" + role, "roles": []string{role},
			"iat": now.Unix(), "exp": now.Add(validity).Unix(),
		})
		if err != nil {
			return err
		}
		w.file(role+".token", []byte(tok+"\n"))
	}

	for _, svc := range services {
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
		w.file(svc+"-page-token-keys", []byte("dev1:"+base64.StdEncoding.EncodeToString(secret)+"\n"))
	}
	return w.err
}

// token is a compact JWS of claims, ES256.
func token(key *ecdsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	// JWS wants r and s as two 32-byte big-endian halves, not ASN.1.
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return signed + "." + b64(sig), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return k
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// writer keeps the first error, so run reads as a list of files.
type writer struct {
	dir string
	err error
}

func (w *writer) pem(name, typ string, der []byte) {
	w.file(name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func (w *writer) file(name string, b []byte) {
	if w.err != nil {
		return
	}
	// World-readable on purpose: these files are public, in the repository.
	w.err = os.WriteFile(filepath.Join(w.dir, name), b, 0o644)
}
