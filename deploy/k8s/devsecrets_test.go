package k8s_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/platforma/platforma/deploy/k8s/manifests"
)

// The dev overlay's credentials work together: each server's certificate
// is valid for the names clients dial and chains to the CA the clients
// trust, the relay's client certificate carries OpLogService's SPIFFE ID
// and chains to the CA ProfileService verifies clients with, the tokens
// verify against the JWKS with the configured issuer and audience, and
// every DSN's password is the one the bootstrap sets. Everything stays
// valid for another year: regenerate with `go run ./cmd/devsecrets` before
// it does not.
func TestDevCredentialsFitTogether(t *testing.T) {
	s := envNamed(t, "dev").objects(t)
	validUntil := time.Now().AddDate(1, 0, 0)

	relay := secretOf(t, s, "oplog", "oplog-relay-tls")
	relayRoots := pool(t, relay["ca.crt"])
	clientCA := pool(t, secretOf(t, s, "profile", "platforma-client-ca")["ca.crt"])

	for _, svc := range services {
		sec := secretOf(t, s, svc, svc+"-tls")
		pair, err := tls.X509KeyPair(sec["tls.crt"], sec["tls.key"])
		require.NoError(t, err, "%s: certificate and key belong together", svc)
		leaf := pair.Leaf
		assert.True(t, leaf.NotAfter.After(validUntil), "%s's certificate expires on %s", svc, leaf.NotAfter)
		for _, host := range []string{svc + ".platforma.svc.cluster.local", svc, "localhost"} {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: relayRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			assert.NoError(t, err, "%s's certificate for %s", svc, host)
		}
	}

	// The relay dials the host of PROFILE_ADDR.
	oplog, _ := findServer(s, "oplog")
	_, c := oplog.Platform()
	addr, _, _ := s.Setting(oplog.Namespace, c, "profile-addr")
	host, _, err := net.SplitHostPort(strings.TrimPrefix(addr, "dns:///"))
	require.NoError(t, err)
	profileTLS := secretOf(t, s, "profile", "profile-tls")
	profileCert, err := tls.X509KeyPair(profileTLS["tls.crt"], profileTLS["tls.key"])
	require.NoError(t, err)
	_, err = profileCert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: relayRoots})
	assert.NoError(t, err, "the relay verifies ProfileService as %s", host)

	relayCert, err := tls.X509KeyPair(relay["tls.crt"], relay["tls.key"])
	require.NoError(t, err)
	_, err = relayCert.Leaf.Verify(x509.VerifyOptions{Roots: clientCA, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	assert.NoError(t, err, "ProfileService verifies the relay's certificate")
	require.Len(t, relayCert.Leaf.URIs, 1)
	assert.Equal(t, "spiffe://platforma/service/oplog", relayCert.Leaf.URIs[0].String())
	assert.True(t, relayCert.Leaf.NotAfter.After(validUntil))

	// Tokens, as operators would send them.
	common := configMapOf(t, s, "profile", "platforma-common").Data
	jwks := secretOf(t, s, "profile", "platforma-jwks")["jwks.json"]
	for _, role := range []string{"operator", "admin", "worker"} {
		b, err := os.ReadFile(filepath.Join("overlays/dev/common/secrets", role+".token"))
		require.NoError(t, err)
		claims := verifyES256(t, strings.TrimSpace(string(b)), jwks)
		assert.Equal(t, common["JWT_ISSUER"], claims["iss"], role)
		assert.Equal(t, common["JWT_AUDIENCE"], claims["aud"], role)
		assert.Equal(t, []any{role}, claims["roles"], role)
		assert.Greater(t, claims["exp"], float64(validUntil.Unix()), role)
	}

	// DSNs: the roles of README "Database roles", the passwords the
	// bootstrap sets, the dev Postgres's Service and database.
	pg := find[*appsv1.StatefulSet](t, s, "StatefulSet", "postgres")
	pgEnv, _ := s.Env("platforma", &pg.Spec.Template.Spec.Containers[0])
	for _, svc := range services {
		db := secretOf(t, s, svc, svc+"-db")
		for _, role := range []struct{ key, user, password string }{
			{"runtime-url", svc, "runtime-password"},
			{"owner-url", svc + "_owner", "owner-password"},
		} {
			u, err := url.Parse(string(db[role.key]))
			require.NoError(t, err)
			pw, _ := u.User.Password()
			assert.Equal(t, role.user, u.User.Username(), "%s-db %s", svc, role.key)
			assert.Equal(t, string(db[role.password]), pw, "%s-db %s: the password the bootstrap sets", svc, role.key)
			assert.Equal(t, "postgres.platforma.svc.cluster.local:5432", u.Host)
			assert.Equal(t, "/"+pgEnv["POSTGRES_DB"].Value, u.Path)
		}
		keys := string(secretOf(t, s, svc, svc+"-page-tokens")["keys"])
		kid, key, ok := strings.Cut(strings.TrimSpace(keys), ":")
		require.True(t, ok, "kid:base64key")
		raw, err := base64.StdEncoding.DecodeString(key)
		require.NoError(t, err, kid)
		assert.GreaterOrEqual(t, len(raw), 32, "page-token keys are at least 32 bytes")
	}
	admin := secretNamed(t, s, "platforma-db-admin")
	u, err := url.Parse(string(admin["url"]))
	require.NoError(t, err)
	pw, _ := u.User.Password()
	assert.Equal(t, string(secretNamed(t, s, "dev-postgres")["password"]), pw, "the admin DSN is the dev Postgres's superuser")
	assert.Equal(t, pgEnv["POSTGRES_USER"].Value, u.User.Username())
}

// secretOf is the data of the Secret named prefix (plus its hash suffix)
// that svc's Deployment mounts or reads.
func secretOf(t *testing.T, s manifests.Set, svc, prefix string) map[string][]byte {
	t.Helper()
	spec := deployment(t, s, svc).Spec.Template.Spec
	var names []string
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			names = append(names, v.Secret.SecretName)
		}
	}
	for _, e := range spec.Containers[0].Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			names = append(names, e.ValueFrom.SecretKeyRef.Name)
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, prefix+"-") || n == prefix {
			return find[*corev1.Secret](t, s, "Secret", n).Data
		}
	}
	t.Fatalf("%s uses no Secret %s (it uses %v)", svc, prefix, names)
	return nil
}

func secretNamed(t *testing.T, s manifests.Set, prefix string) map[string][]byte {
	t.Helper()
	for _, sec := range manifests.Of[*corev1.Secret](s) {
		if strings.HasPrefix(sec.Name, prefix+"-") {
			return sec.Data
		}
	}
	t.Fatalf("no Secret %s", prefix)
	return nil
}

func pool(t *testing.T, pemBytes []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	require.True(t, p.AppendCertsFromPEM(pemBytes))
	return p
}

// verifyES256 checks a compact JWS against the JWKS's key of its kid and
// returns its claims.
func verifyES256(t *testing.T, token string, jwks []byte) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	require.Len(t, parts, 3)
	var header struct{ Alg, Kid string }
	decodePart(t, parts[0], &header)
	require.Equal(t, "ES256", header.Alg)
	var set struct {
		Keys []struct{ Kid, Kty, Crv, X, Y string }
	}
	require.NoError(t, json.Unmarshal(jwks, &set))
	i := slices.IndexFunc(set.Keys, func(k struct{ Kid, Kty, Crv, X, Y string }) bool { return k.Kid == header.Kid })
	require.GreaterOrEqual(t, i, 0, "the JWKS has the token's key %s", header.Kid)
	k := set.Keys[i]
	require.Equal(t, "P-256", k.Crv)
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: bigFrom(t, k.X), Y: bigFrom(t, k.Y)}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	require.NoError(t, err)
	require.Len(t, sig, 64)
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	require.True(t, ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])), "signature")
	var claims map[string]any
	decodePart(t, parts[1], &claims)
	return claims
}

func decodePart(t *testing.T, part string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(part)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v))
}

func bigFrom(t *testing.T, s string) *big.Int {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	require.NoError(t, err)
	return new(big.Int).SetBytes(b)
}
