package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testIssuer   = "https://idp.test"
	testAudience = "platforma"
)

// signer is a signing key with its kid and algorithm.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    any // private
	public any
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
)

func newSigner(t testing.TB, alg, kid string) signer {
	t.Helper()
	switch alg {
	case "RS256":
		keysOnce.Do(func() {
			var err error
			rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
			require.NoError(t, err)
		})
		return signer{kid: kid, method: jwt.SigningMethodRS256, key: rsaKey, public: &rsaKey.PublicKey}
	case "ES256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return signer{kid: kid, method: jwt.SigningMethodES256, key: k, public: &k.PublicKey}
	case "EdDSA":
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		return signer{kid: kid, method: jwt.SigningMethodEdDSA, key: priv, public: pub}
	}
	t.Fatalf("no algorithm %s", alg)
	return signer{}
}

// jwks is the key set of signers' public keys.
func jwks(t testing.TB, signers ...signer) []byte {
	t.Helper()
	var set jwkset.JWKSMarshal
	for _, s := range signers {
		k, err := jwkset.NewJWKFromKey(s.public, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			KID: s.kid, ALG: jwkset.ALG(s.method.Alg()), USE: jwkset.UseSig,
		}})
		require.NoError(t, err)
		set.Keys = append(set.Keys, k.Marshal())
	}
	b, err := json.Marshal(set)
	require.NoError(t, err)
	return b
}

// claims are valid claims for an operator; edit the copy.
func claims(extra map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": "alice",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"roles": []string{"operator"},
		"jti":   base64.RawURLEncoding.EncodeToString(randomBytes(8)),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func (s signer) sign(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	tok.Header["kid"] = s.kid
	out, err := tok.SignedString(s.key)
	require.NoError(t, err)
	return out
}

func testVerifier(t testing.TB, cfg JWTConfig) *verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	if cfg.Audience == "" {
		cfg.Audience = testAudience
	}
	v, err := newVerifier(ctx, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return v
}

func TestTokensOfEachAcceptedAlgorithmAreVerified(t *testing.T) {
	t.Parallel()
	for _, alg := range Algorithms {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			s := newSigner(t, alg, "k-"+alg)
			v := testVerifier(t, JWTConfig{JWKS: jwks(t, s)})
			id, err := v.verify(context.Background(), s.sign(t, claims(map[string]any{"roles": []string{"operator", "admin"}})))
			require.NoError(t, err)
			assert.Equal(t, &Identity{Subject: "alice", Via: ViaToken, Roles: Of(Operator, Admin)}, id)
		})
	}
}

func TestBadTokensAreRefused(t *testing.T) {
	t.Parallel()
	good := newSigner(t, "ES256", "good")
	stranger := newSigner(t, "ES256", "stranger")
	impostor := newSigner(t, "ES256", "good") // the trusted kid, another key
	rs := newSigner(t, "RS256", "rsa")
	v := testVerifier(t, JWTConfig{JWKS: jwks(t, good, rs)})

	// alg "none": header and claims, no signature.
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	none := enc(map[string]string{"alg": "none", "typ": "JWT", "kid": "good"}) + "." + enc(claims(nil)) + "."
	// HS256 keyed with the RSA public key, the classic confusion attack.
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(rs.public))})
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
	hs.Header["kid"] = "rsa"
	hsToken, err := hs.SignedString(pubPEM)
	require.NoError(t, err)

	tests := []struct {
		name, token, reason string
	}{
		{"expired", good.sign(t, claims(map[string]any{"exp": time.Now().Add(-time.Minute).Unix(), "iat": time.Now().Add(-time.Hour).Unix()})), "expired"},
		{"wrong audience", good.sign(t, claims(map[string]any{"aud": "someone-else"})), "another audience"},
		{"wrong issuer", good.sign(t, claims(map[string]any{"iss": "https://evil.test"})), "another issuer"},
		{"no exp", good.sign(t, claims(map[string]any{"exp": nil})), "required claim"},
		{"not valid yet", good.sign(t, claims(map[string]any{"nbf": time.Now().Add(time.Hour).Unix()})), "not valid yet"},
		{"issued in the future", good.sign(t, claims(map[string]any{"iat": time.Now().Add(time.Hour).Unix()})), "not valid yet"},
		{"alg none", none, "signature not verified"},
		{"HS256 with the public key", hsToken, "signature not verified"},
		{"unknown key", stranger.sign(t, claims(nil)), "signature not verified"},
		{"known kid, another key", impostor.sign(t, claims(nil)), "signature not verified"},
		{"garbage", "garbage", "malformed"},
		{"three garbage parts", "a.b.c", "malformed"},
		{"no subject", good.sign(t, claims(map[string]any{"sub": nil})), "no subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := v.verify(context.Background(), tt.token)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.reason)
			assert.True(t, strings.HasPrefix(err.Error(), "invalid bearer token: "), err.Error())
			for _, part := range strings.Split(tt.token, ".") {
				if len(part) > 8 {
					assert.NotContains(t, err.Error(), part, "the error never repeats the token")
				}
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestRolesClaim(t *testing.T) {
	t.Parallel()
	s := newSigner(t, "ES256", "k")
	tests := []struct {
		name  string
		path  string
		extra map[string]any
		want  Roles
	}{
		{"array", "", map[string]any{"roles": []string{"worker", "admin"}}, Of(Worker, Admin)},
		{"space-separated string", "", map[string]any{"roles": "operator service"}, Of(Operator, Service)},
		{"unknown names ignored", "", map[string]any{"roles": []string{"root", "operator", "Admin"}}, Of(Operator)},
		{"missing", "", map[string]any{"roles": nil}, 0},
		{"wrong type", "", map[string]any{"roles": 7}, 0},
		{"nested path", "realm_access.roles", map[string]any{"realm_access": map[string]any{"roles": []string{"admin"}}}, Of(Admin)},
		{"nested path missing", "realm_access.roles", map[string]any{"roles": []string{"admin"}}, 0},
		{"permissions claim", "permissions", map[string]any{"permissions": []string{"operator"}}, Of(Operator)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := testVerifier(t, JWTConfig{JWKS: jwks(t, s), RolesClaim: tt.path})
			id, err := v.verify(context.Background(), s.sign(t, claims(tt.extra)))
			require.NoError(t, err)
			assert.Equal(t, tt.want, id.Roles)
		})
	}
}

// A key rotated into the JWKS file verifies at once (its unknown kid makes
// the file be read again); the key rotated out stops verifying.
func TestRotatedKeyInTheJWKSFileIsPickedUpWithoutRestart(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "jwks.json")
	old, next := newSigner(t, "ES256", "2024"), newSigner(t, "EdDSA", "2025")
	require.NoError(t, os.WriteFile(file, jwks(t, old), 0o600))
	v := testVerifier(t, JWTConfig{JWKSFile: file, RefreshInterval: time.Hour})
	_, err := v.verify(context.Background(), old.sign(t, claims(nil)))
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(file, jwks(t, next), 0o600))
	_, err = v.verify(context.Background(), next.sign(t, claims(nil)))
	require.NoError(t, err, "the new key verifies at once")
	_, err = v.verify(context.Background(), old.sign(t, claims(nil)))
	assert.ErrorContains(t, err, "signature not verified", "a new token of the removed key")

	// A broken file changes nothing; the periodic refresh then finds a
	// good one again.
	require.NoError(t, os.WriteFile(file, []byte("{not json"), 0o600))
	require.Error(t, v.keys.refresh(context.Background()))
	_, err = v.verify(context.Background(), next.sign(t, claims(nil)))
	assert.NoError(t, err, "the keys loaded before stay")
}

func TestJWKSFileIsReadAgainEveryInterval(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "jwks.json")
	a, b := newSigner(t, "ES256", "a"), newSigner(t, "ES256", "b")
	require.NoError(t, os.WriteFile(file, jwks(t, a), 0o600))
	v := testVerifier(t, JWTConfig{JWKSFile: file, RefreshInterval: 20 * time.Millisecond})
	gen := v.keys.gen.Load()
	require.NoError(t, os.WriteFile(file, jwks(t, a, b), 0o600))
	require.Eventually(t, func() bool { return v.keys.gen.Load() > gen+1 }, 5*time.Second, 10*time.Millisecond)
	// Known now without an unknown-kid refresh.
	_, err := v.keys.MemoryJWKSet.KeyRead(context.Background(), "b")
	assert.NoError(t, err)
}

// The same from an identity provider's URL: rotated keys are fetched
// when a token names them, and at most every 5 s for unknown ones.
func TestRotatedKeyAtTheJWKSURLIsPickedUpWithoutRestart(t *testing.T) {
	t.Parallel()
	old, next, bogus := newSigner(t, "RS256", "r1"), newSigner(t, "ES256", "e2"), newSigner(t, "ES256", "nope")
	var current atomic.Value
	current.Store(jwks(t, old))
	var fetches atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(current.Load().([]byte))
	}))
	defer idp.Close()
	v := testVerifier(t, JWTConfig{JWKSURL: idp.URL + "/jwks.json", RefreshInterval: time.Hour})
	_, err := v.verify(context.Background(), old.sign(t, claims(nil)))
	require.NoError(t, err)
	assert.Equal(t, int32(1), fetches.Load())

	current.Store(jwks(t, old, next))
	_, err = v.verify(context.Background(), next.sign(t, claims(nil)))
	require.NoError(t, err, "fetched again for the unknown kid")
	assert.Equal(t, int32(2), fetches.Load())

	for i := 0; i < 20; i++ {
		_, err = v.verify(context.Background(), bogus.sign(t, claims(nil)))
		require.Error(t, err)
	}
	assert.Equal(t, int32(2), fetches.Load(), "unknown kids cannot make the server hammer the identity provider")
}

func TestJWKSURLDownAtStartIsRetried(t *testing.T) {
	t.Parallel()
	s := newSigner(t, "ES256", "k")
	var up atomic.Bool
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(jwks(t, s))
	}))
	defer idp.Close()
	v := testVerifier(t, JWTConfig{JWKSURL: idp.URL, RefreshInterval: 20 * time.Millisecond})
	up.Store(true)
	require.Eventually(t, func() bool {
		_, err := v.verify(context.Background(), s.sign(t, claims(nil)))
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
}

func TestVerifiedTokensAreCachedBoundedAndUntilTheyExpire(t *testing.T) {
	t.Parallel()
	s := newSigner(t, "ES256", "k")
	v := testVerifier(t, JWTConfig{JWKS: jwks(t, s)})
	exp := time.Now().Add(10 * time.Second).Truncate(time.Second)
	tok := s.sign(t, claims(map[string]any{"exp": exp.Unix()}))
	first, err := v.verify(context.Background(), tok)
	require.NoError(t, err)
	again, err := v.verify(context.Background(), tok)
	require.NoError(t, err)
	assert.Same(t, first, again, "the second call is a cache hit")

	// Past its exp (and the leeway), the cache does not answer.
	v.now = func() time.Time { return exp.Add(leeway + time.Second) }
	_, err = v.verify(context.Background(), tok)
	assert.ErrorContains(t, err, "expired")

	for i := 0; i < tokenCacheSize+500; i++ {
		var sum [32]byte
		copy(sum[:], randomBytes(32))
		v.cache.put(sum, cachedToken{id: first, until: time.Now().Add(time.Minute)})
	}
	v.cache.mu.RLock()
	defer v.cache.mu.RUnlock()
	assert.LessOrEqual(t, len(v.cache.entries), tokenCacheSize)
}
