package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
)

// leafWith is a self-signed certificate with the given URI SANs: what a
// verified chain's leaf looks like to the interceptor.
func leafWith(t testing.TB, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		require.NoError(t, err)
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

func withCert(ctx context.Context, leaf *x509.Certificate) context.Context {
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		VerifiedChains: [][]*x509.Certificate{{leaf}},
	}}})
}

func withToken(ctx context.Context, header string) context.Context {
	return metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", header))
}

func TestCertificateIdentities(t *testing.T) {
	t.Parallel()
	tests := []struct {
		uris    []string
		subject string
		roles   Roles
	}{
		{[]string{"spiffe://platforma/worker/scraper-7"}, "spiffe://platforma/worker/scraper-7", Of(Worker)},
		{[]string{"spiffe://platforma/service/oplog"}, "spiffe://platforma/service/oplog", Of(Service)},
		{[]string{"https://example.com", "spiffe://platforma/worker/a_b.c"}, "spiffe://platforma/worker/a_b.c", Of(Worker)},
		{[]string{"spiffe://platforma/operator/alice"}, "", 0},                           // no such kind
		{[]string{"spiffe://other/worker/x"}, "", 0},                                     // another trust domain
		{[]string{"spiffe://platforma/worker/x/y"}, "", 0},                               // one name only
		{[]string{"spiffe://platforma/worker/"}, "", 0},                                  // empty name
		{[]string{"spiffe://platforma/worker/a", "spiffe://platforma/service/b"}, "", 0}, // two SPIFFE IDs
		{nil, "", 0}, // none: the CN is not used
	}
	for _, tt := range tests {
		id, err := certIdentity(leafWith(t, tt.uris...))
		if tt.subject == "" {
			assert.Error(t, err, "%v", tt.uris)
			continue
		}
		require.NoError(t, err, "%v", tt.uris)
		assert.Equal(t, &Identity{Subject: tt.subject, Via: ViaCertificate, Roles: tt.roles}, id)
	}
}

type interceptorEnv struct {
	a      *Auth
	s      signer
	logs   *bytes.Buffer
	worker *x509.Certificate
}

func newInterceptorEnv(t testing.TB, limits RateLimits) *interceptorEnv {
	t.Helper()
	s := newSigner(t, "ES256", "k")
	logs := &bytes.Buffer{}
	a, err := New(context.Background(), Config{
		JWT:        &JWTConfig{JWKS: jwks(t, s), Issuer: testIssuer, Audience: testAudience},
		RateLimits: limits,
		Logger:     slog.New(slog.NewJSONHandler(logs, nil)),
	})
	require.NoError(t, err)
	return &interceptorEnv{a: a, s: s, logs: logs, worker: leafWith(t, "spiffe://platforma/worker/w1")}
}

func (e *interceptorEnv) unary(ctx context.Context, method string, req any) (*Identity, error) {
	var seen *Identity
	ctx = WithCallInfo(ctx)
	_, err := e.a.UnaryServerInterceptor()(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, req any) (any, error) {
		return e.a.AuditUnaryServerInterceptor()(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, _ any) (any, error) {
			seen = FromContext(ctx)
			return nil, nil
		})
	})
	return seen, err
}

func TestInterceptorDecisions(t *testing.T) {
	t.Parallel()
	e := newInterceptorEnv(t, RateLimits{})
	ctx := context.Background()
	get := profilev1.ProfileService_GetProfile_FullMethodName
	list := profilev1.ProfileService_ListProfiles_FullMethodName

	_, err := e.unary(ctx, get, nil)
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "no credentials")
	assert.Contains(t, status.Convert(err).Message(), "no credentials")

	id, err := e.unary(withCert(ctx, e.worker), get, nil)
	require.NoError(t, err)
	assert.Equal(t, "spiffe://platforma/worker/w1", id.Subject)

	_, err = e.unary(withCert(ctx, e.worker), list, nil)
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Equal(t, "platforma.profile.v1.ProfileService/ListProfiles needs the role operator or admin; spiffe://platforma/worker/w1 has worker", status.Convert(err).Message())

	tok := e.s.sign(t, claims(nil))
	id, err = e.unary(withToken(ctx, "Bearer "+tok), list, nil)
	require.NoError(t, err)
	assert.Equal(t, &Identity{Subject: "alice", Via: ViaToken, Roles: Of(Operator)}, id)
	_, err = e.unary(withToken(ctx, "bearer "+tok), list, nil)
	assert.NoError(t, err, "the scheme is case-insensitive")

	for _, header := range []string{"garbage", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", tok} {
		// With a valid worker certificate too: a bad header is never
		// ignored in favour of the certificate.
		_, err = e.unary(withToken(withCert(ctx, e.worker), header), get, nil)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "%q", header)
		if len(header) > 12 {
			assert.NotContains(t, status.Convert(err).Message(), header[7:])
		}
	}
	two := metadata.NewIncomingContext(ctx, metadata.MD{"authorization": {"Bearer " + tok, "Bearer " + tok}})
	_, err = e.unary(two, list, nil)
	assert.Equal(t, codes.Unauthenticated, status.Code(err))

	// Public methods look at nothing.
	_, err = e.unary(withToken(ctx, "garbage"), "/grpc.health.v1.Health/Check", nil)
	assert.NoError(t, err)
	// A method without a rule (unreachable once Check passed).
	_, err = e.unary(withCert(ctx, e.worker), "/x.Y/Z", nil)
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.NotContains(t, e.logs.String(), tok[10:], "no credential in any log line")
}

func TestRateLimitIsResourceExhaustedWithRetryInfo(t *testing.T) {
	t.Parallel()
	e := newInterceptorEnv(t, RateLimits{Write: RateLimit{Rate: 1.0 / 60, Burst: 2}})
	ctx := withCert(context.Background(), e.worker)
	write := profilev1.ProfileService_RecordLoginResult_FullMethodName
	for i := 0; i < 2; i++ {
		_, err := e.unary(ctx, write, nil)
		require.NoError(t, err)
	}
	_, err := e.unary(ctx, write, nil)
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code())
	assert.Contains(t, st.Message(), "rate limit of spiffe://platforma/worker/w1 for write calls")
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	require.NotNil(t, retry, "RetryInfo, which the SDK honours")
	assert.InDelta(t, 60, retry.GetRetryDelay().AsDuration().Seconds(), 1)
	_, err = e.unary(ctx, profilev1.ProfileService_GetProfile_FullMethodName, nil)
	assert.NoError(t, err, "reads have their own bucket")
}

func TestOperatorReadsAreAudited(t *testing.T) {
	t.Parallel()
	e := newInterceptorEnv(t, RateLimits{})
	ctx := context.Background()
	tok := e.s.sign(t, claims(nil))
	req := &oplogv1.ListOperationLogsRequest{UserId: "0193a0c2-0000-7000-8000-0000000000aa", PageSize: 20, PageToken: "secret-cursor"}
	_, err := e.unary(withToken(ctx, "Bearer "+tok), oplogv1.OpLogService_ListOperationLogs_FullMethodName, req)
	require.NoError(t, err)
	assert.Equal(t, "secret-cursor", req.GetPageToken(), "the request itself is untouched")
	_, err = e.unary(withCert(ctx, e.worker), profilev1.ProfileService_GetProfile_FullMethodName, &profilev1.GetProfileRequest{Id: "x"})
	require.NoError(t, err)

	lines := strings.Split(strings.TrimSpace(e.logs.String()), "\n")
	require.Len(t, lines, 1, "one line for the operator; workers' reads are not audited")
	line := lines[0]
	assert.Contains(t, line, `"msg":"audit"`)
	assert.Contains(t, line, `"audit.subject":"alice"`)
	assert.Contains(t, line, `"audit.via":"token"`)
	assert.Contains(t, line, `"grpc.method":"platforma.oplog.v1.OpLogService/ListOperationLogs"`)
	assert.Contains(t, line, `\"user_id\":\"0193a0c2-0000-7000-8000-0000000000aa\"`)
	assert.Contains(t, line, `\"page_size\":20`)
	assert.NotContains(t, line, "secret-cursor")
	assert.NotContains(t, line, tok[10:])
}

// BenchmarkAuthInterceptor is what authentication, authorization and the
// rate limit add to a call:
//
//	go test -run '^$' -bench BenchmarkAuthInterceptor -benchmem ./services/kit/auth/
func BenchmarkAuthInterceptor(b *testing.B) {
	get := profilev1.ProfileService_GetProfile_FullMethodName
	info := &grpc.UnaryServerInfo{FullMethod: get}
	noop := func(context.Context, any) (any, error) { return nil, nil }
	run := func(b *testing.B, e *interceptorEnv, ctx context.Context) {
		intercept := e.a.UnaryServerInterceptor()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := intercept(WithCallInfo(ctx), nil, info, noop); err != nil {
				b.Fatal(err)
			}
		}
	}
	high := RateLimits{Read: RateLimit{Rate: 1e12, Burst: 1_000_000}}
	b.Run("certificate", func(b *testing.B) {
		e := newInterceptorEnv(b, RateLimits{})
		run(b, e, withCert(context.Background(), e.worker))
	})
	b.Run("certificate+ratelimit", func(b *testing.B) {
		e := newInterceptorEnv(b, high)
		run(b, e, withCert(context.Background(), e.worker))
	})
	b.Run("token/cached", func(b *testing.B) {
		e := newInterceptorEnv(b, high)
		run(b, e, withToken(context.Background(), "Bearer "+e.s.sign(b, claims(nil))))
	})
	for _, alg := range Algorithms {
		b.Run("token/uncached/"+alg, func(b *testing.B) {
			e := newInterceptorEnv(b, high)
			s := newSigner(b, alg, "k-"+alg)
			require.NoError(b, e.a.jwt.keys.KeyReplaceAll(context.Background(), mustParseJWKS(b, jwks(b, s))))
			e.a.jwt.noCache = true
			run(b, e, withToken(context.Background(), "Bearer "+s.sign(b, claims(nil))))
		})
	}
}

func mustParseJWKS(t testing.TB, raw []byte) []jwkset.JWK {
	t.Helper()
	keys, err := parseJWKS(raw)
	require.NoError(t, err)
	return keys
}
