package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/server"
)

// The three platform services, from their generated descriptors; stubs
// answer every call UNIMPLEMENTED, so a call that reaches one passed
// authentication and authorization.
var platformDescs = []*grpc.ServiceDesc{
	&oplogv1.OpLogService_ServiceDesc,
	&profilev1.ProfileService_ServiceDesc,
	&reviewmetav1.ReviewMetadataService_ServiceDesc,
}

// stubs is a binary serving the three platform services with the
// platform's method table, as the real binaries do (each serves one).
func stubs() app.Service {
	return app.Service{
		Name: "stubs", DefaultListenAddr: ":0", DefaultMetricsAddr: ":0",
		Migrations: migrations.Profile,
		Register: func(r server.Registrar, _ db.Pools) error {
			oplogv1.RegisterOpLogServiceServer(r.GRPC, oplogv1.UnimplementedOpLogServiceServer{})
			profilev1.RegisterProfileServiceServer(r.GRPC, profilev1.UnimplementedProfileServiceServer{})
			reviewmetav1.RegisterReviewMetadataServiceServer(r.GRPC, reviewmetav1.UnimplementedReviewMetadataServiceServer{})
			return nil
		},
	}
}

func startStubs(t *testing.T, flags ...string) *apptest.Service {
	t.Helper()
	return apptest.Start(t, stubs(), profilev1.ProfileService_ServiceDesc.ServiceName, flags...)
}

// rpc is one method of a service descriptor.
type rpc struct {
	full   string
	stream bool
}

func methodsOf(descs ...*grpc.ServiceDesc) []rpc {
	var out []rpc
	for _, d := range descs {
		for _, m := range d.Methods {
			out = append(out, rpc{full: "/" + d.ServiceName + "/" + m.MethodName})
		}
		for _, s := range d.Streams {
			out = append(out, rpc{full: "/" + d.ServiceName + "/" + s.StreamName, stream: true})
		}
	}
	return out
}

// call sends an empty request (a valid encoding of every message) and
// returns the call's error.
func call(ctx context.Context, conn *grpc.ClientConn, m rpc) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !m.stream {
		return conn.Invoke(ctx, m.full, &emptypb.Empty{}, &emptypb.Empty{})
	}
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, m.full)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(&emptypb.Empty{}); err != nil && err != io.EOF {
		return err
	}
	_ = cs.CloseSend()
	return cs.RecvMsg(&emptypb.Empty{})
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func clientCert(t *testing.T, kind, name string) *tls.Certificate {
	t.Helper()
	c, err := apptest.PKI(t).ClientCert(auth.SPIFFEID(kind, name))
	require.NoError(t, err)
	return &c
}

// Without credentials, every method of the three services is
// UNAUTHENTICATED; health and reflection answer.
func TestAnonymousCallersAreUnauthenticatedOnEveryMethodButHealthAndReflection(t *testing.T) {
	t.Parallel()
	s := startStubs(t)
	anonymous := dial(t, s.Addr, apptest.DialOptions(t, nil, "")...)
	methods := methodsOf(platformDescs...)
	require.Len(t, methods, 19)
	for _, m := range methods {
		err := call(context.Background(), anonymous, m)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "%s: %v", m.full, err)
	}
	resp, err := healthgrpc.NewHealthClient(anonymous).Check(context.Background(), &healthgrpc.HealthCheckRequest{})
	require.NoError(t, err, "health is open")
	assert.Equal(t, healthgrpc.HealthCheckResponse_SERVING, resp.GetStatus())
	for _, m := range methodsOf(&healthgrpc.Health_ServiceDesc, &reflectionv1.ServerReflection_ServiceDesc, &reflectionv1alpha.ServerReflection_ServiceDesc) {
		err := call(context.Background(), anonymous, m)
		assert.NotEqual(t, codes.Unauthenticated, status.Code(err), "%s is open: %v", m.full, err)
		assert.NotEqual(t, codes.PermissionDenied, status.Code(err), "%s is open: %v", m.full, err)
	}
	assert.Contains(t, apptest.ListServices(t, anonymous), "platforma.oplog.v1.OpLogService", "grpcurl list works without a token")

	// A certificate of another CA does not even get a connection.
	other, err := devpki.New("", "")
	require.NoError(t, err)
	foreign, err := other.ClientCert(auth.SPIFFEID("worker", "w1"))
	require.NoError(t, err)
	conn := dial(t, s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: apptest.PKI(t).CertPool(), Certificates: []tls.Certificate{foreign},
	})))
	err = call(context.Background(), conn, methods[0])
	assert.Equal(t, codes.Unavailable, status.Code(err), "the handshake fails: %v", err)
}

// Every method of the three services (from the generated descriptors: a
// new RPC fails here until it is given roles below and in the table) with
// each kind of caller: allowed (the stub's UNIMPLEMENTED) or
// PERMISSION_DENIED naming the method and the roles it needs.
func TestEveryMethodAllowsExactlyItsRoles(t *testing.T) {
	t.Parallel()
	s := startStubs(t)
	callers := map[string]*grpc.ClientConn{
		"worker":   dial(t, s.Addr, apptest.DialOptions(t, clientCert(t, "worker", "scraper-1"), "")...),
		"service":  dial(t, s.Addr, apptest.DialOptions(t, clientCert(t, "service", "oplog"), "")...),
		"operator": dial(t, s.Addr, apptest.DialOptions(t, nil, apptest.Token(t, "olga", auth.Operator))...),
		"admin":    dial(t, s.Addr, apptest.DialOptions(t, nil, apptest.Token(t, "adam", auth.Admin))...),
	}
	allowed := map[string][]string{
		"/platforma.oplog.v1.OpLogService/Ingest":                                  {"worker"},
		"/platforma.oplog.v1.OpLogService/ListOperationLogs":                       {"operator", "admin"},
		"/platforma.oplog.v1.OpLogService/GetOperationStats":                       {"operator", "admin"},
		"/platforma.oplog.v1.OpLogService/GetProxyStats":                           {"operator", "admin"},
		"/platforma.oplog.v1.OpLogService/GetFailureRateSeries":                    {"operator", "admin"},
		"/platforma.oplog.v1.OpLogService/ListLoginDeadLetters":                    {"admin"},
		"/platforma.oplog.v1.OpLogService/ReplayLoginDeadLetters":                  {"admin"},
		"/platforma.profile.v1.ProfileService/RecordLoginResult":                   {"worker"},
		"/platforma.profile.v1.ProfileService/BatchRecordLoginResults":             {"worker", "service"},
		"/platforma.profile.v1.ProfileService/GetProfile":                          {"worker", "operator", "admin"},
		"/platforma.profile.v1.ProfileService/ListProfiles":                        {"operator", "admin"},
		"/platforma.profile.v1.ProfileService/GetStabilityDistribution":            {"operator", "admin"},
		"/platforma.profile.v1.ProfileService/WatchProfileChanges":                 {"worker", "service", "operator", "admin"},
		"/platforma.reviewmeta.v1.ReviewMetadataService/UpsertReviewMetadata":      {"worker"},
		"/platforma.reviewmeta.v1.ReviewMetadataService/BatchUpsertReviewMetadata": {"worker"},
		"/platforma.reviewmeta.v1.ReviewMetadataService/RecordReplyAttempt":        {"worker"},
		"/platforma.reviewmeta.v1.ReviewMetadataService/GetReviewMetadata":         {"worker", "operator", "admin"},
		"/platforma.reviewmeta.v1.ReviewMetadataService/ListReviewMetadata":        {"worker", "operator", "admin"},
		"/platforma.reviewmeta.v1.ReviewMetadataService/GetReplyStats":             {"operator", "admin"},
	}
	for _, m := range methodsOf(platformDescs...) {
		who, ok := allowed[m.full]
		if !assert.True(t, ok, "%s is a new RPC: decide who may call it (here, in services/kit/auth/methods.go and in README \"Security\")", m.full) {
			continue
		}
		for caller, conn := range callers {
			err := call(context.Background(), conn, m)
			if contains(who, caller) {
				assert.Equal(t, codes.Unimplemented, status.Code(err), "%s as %s: allowed, got %v", m.full, caller, err)
				continue
			}
			st := status.Convert(err)
			if assert.Equal(t, codes.PermissionDenied, st.Code(), "%s as %s: %v", m.full, caller, err) {
				assert.Contains(t, st.Message(), strings.TrimPrefix(m.full, "/")+" needs the role "+strings.Join(who, " or "))
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Expired, foreign and forged tokens are UNAUTHENTICATED, logged (at
// INFO) and counted like any refusal; no log line holds a token.
func TestRefusedTokensAreUnauthenticatedLoggedAndCountedButNeverLogged(t *testing.T) {
	t.Parallel()
	s := startStubs(t, "-log-level=debug")
	p := apptest.PKI(t)
	now := time.Now()
	claims := func(edit map[string]any) map[string]any {
		c := map[string]any{"iss": p.Issuer, "aud": p.Audience, "sub": "mallory", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "roles": []string{"admin"}}
		for k, v := range edit {
			c[k] = v
		}
		return c
	}
	sign := func(edit map[string]any) string {
		tok, err := p.Sign(claims(edit))
		require.NoError(t, err)
		return tok
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	tokens := map[string]string{
		"expired":        sign(map[string]any{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()}),
		"wrong audience": sign(map[string]any{"aud": "billing"}),
		"wrong issuer":   sign(map[string]any{"iss": "https://evil.example"}),
		"alg none":       enc(map[string]string{"alg": "none", "kid": p.KeyID}) + "." + enc(claims(nil)) + ".",
		"garbage":        "Zm9vYmFyYmF6cXV4cXV1eGdhcmJhZ2V0b2tlbg",
	}
	worker := clientCert(t, "worker", "w1")
	get := rpc{full: profilev1.ProfileService_GetProfile_FullMethodName}
	for name, tok := range tokens {
		// With a worker's certificate on the same connection: the bad
		// token is never ignored.
		conn := dial(t, s.Addr, apptest.DialOptions(t, worker, tok)...)
		err := call(context.Background(), conn, get)
		st := status.Convert(err)
		require.Equal(t, codes.Unauthenticated, st.Code(), "%s: %v", name, err)
		assert.Contains(t, st.Message(), "invalid bearer token", name)
	}
	require.Eventually(t, func() bool {
		return strings.Count(s.Logs(), "grpc.code=Unauthenticated") >= len(tokens)
	}, 5*time.Second, 20*time.Millisecond)
	logs := s.Logs()
	for name, tok := range tokens {
		for _, part := range strings.Split(tok, ".") {
			if len(part) > 10 {
				assert.NotContains(t, logs, part, "%s: a piece of the token is in the logs", name)
			}
		}
	}
	assert.NotContains(t, logs, "level=ERROR")
	v, ok := apptest.MetricValue(apptest.Scrape(t, s.MetricsAddr),
		`grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="GetProfile",grpc_service="platforma.profile.v1.ProfileService",grpc_type="unary"}`)
	require.True(t, ok)
	assert.Equal(t, float64(len(tokens)), v)
}

// A key rotated into the JWKS file is used without a restart, and so is
// one rotated in at the identity provider's URL.
func TestRotatedJWKSKeysAreUsedWithoutRestart(t *testing.T) {
	t.Parallel()
	current, next := apptest.PKI(t), newPKI(t)
	opToken := func(p *devpki.PKI) string {
		tok, err := p.Token("olga", []string{"operator"}, time.Hour)
		require.NoError(t, err)
		return tok
	}
	list := rpc{full: profilev1.ProfileService_ListProfiles_FullMethodName}
	usable := func(s *apptest.Service, p *devpki.PKI) func() bool {
		conn := dial(t, s.Addr, apptest.DialOptions(t, nil, opToken(p))...)
		return func() bool { return status.Code(call(context.Background(), conn, list)) == codes.Unimplemented }
	}

	t.Run("file", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "jwks.json")
		require.NoError(t, devpki.WriteFile(file, current.JWKS()))
		s := startStubs(t, "-jwks-file="+file, "-jwks-refresh-interval=1s")
		require.True(t, usable(s, current)())
		require.False(t, usable(s, next)(), "not trusted yet")
		require.NoError(t, devpki.WriteFile(file, next.JWKS()))
		require.Eventually(t, usable(s, next), 10*time.Second, 50*time.Millisecond)
		assert.False(t, usable(s, current)(), "the key rotated out")
	})
	t.Run("url", func(t *testing.T) {
		t.Parallel()
		var set atomic.Value
		set.Store(current.JWKS())
		idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(set.Load().([]byte))
		}))
		defer idp.Close()
		s := startStubs(t, "-jwks-url="+idp.URL+"/.well-known/jwks.json", "-jwks-refresh-interval=1h")
		require.True(t, usable(s, current)())
		// The next key published before it signs anything, as identity
		// providers rotate: the first token naming it fetches the set.
		set.Store(join(t, current.JWKS(), next.JWKS()))
		assert.True(t, usable(s, next)(), "fetched for the unknown key id, at once")
	})
}

func newPKI(t *testing.T) *devpki.PKI {
	t.Helper()
	p, err := devpki.New(apptest.PKI(t).Issuer, apptest.PKI(t).Audience)
	require.NoError(t, err)
	return p
}

// join merges JWKS documents.
func join(t *testing.T, sets ...[]byte) []byte {
	t.Helper()
	var all struct {
		Keys []json.RawMessage `json:"keys"`
	}
	for _, s := range sets {
		var one struct {
			Keys []json.RawMessage `json:"keys"`
		}
		require.NoError(t, json.Unmarshal(s, &one))
		all.Keys = append(all.Keys, one.Keys...)
	}
	b, err := json.Marshal(all)
	require.NoError(t, err)
	return b
}

// A certificate replaced on disk is served from the next handshakes on,
// without a restart; one that does not load is logged and ignored.
func TestReplacedServerCertificateIsServedWithoutRestart(t *testing.T) {
	t.Parallel()
	p := apptest.PKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	first, err := p.ServerCert()
	require.NoError(t, err)
	require.NoError(t, devpki.WriteKeyPair(certFile, keyFile, first))
	s := startStubs(t, "-tls-cert-file="+certFile, "-tls-key-file="+keyFile, "-tls-reload-interval=50ms")
	served := func() string {
		c, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: p.CertPool(), ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
		require.NoError(t, err)
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	require.Equal(t, first.Leaf.SerialNumber.String(), served())

	second, err := p.ServerCert()
	require.NoError(t, err)
	require.NoError(t, devpki.WriteKeyPair(certFile, keyFile, second))
	require.Eventually(t, func() bool { return served() == second.Leaf.SerialNumber.String() }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(s.Logs(), "tls: certificate reloaded") }, 5*time.Second, 20*time.Millisecond)

	// Half a rotation (the key not yet replaced), then a broken file:
	// the last good pair stays.
	third, err := p.ServerCert()
	require.NoError(t, err)
	thirdCert := filepath.Join(dir, "third.pem")
	require.NoError(t, devpki.WriteKeyPair(thirdCert, filepath.Join(dir, "third-key.pem"), third))
	b, err := os.ReadFile(thirdCert)
	require.NoError(t, err)
	require.NoError(t, devpki.WriteFile(certFile, b))
	require.Eventually(t, func() bool {
		served() // the files are checked at handshakes
		return strings.Contains(s.Logs(), "does not load; keeping the previous one")
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, second.Leaf.SerialNumber.String(), served())
	// The calls go on.
	require.Equal(t, codes.Unimplemented, status.Code(call(context.Background(), s.Conn, rpc{full: profilev1.ProfileService_GetProfile_FullMethodName})))
}

// A caller over its rate gets RESOURCE_EXHAUSTED with a RetryInfo delay;
// other callers and other classes are not affected.
func TestRateLimitedCallerGetsResourceExhaustedWithRetryInfo(t *testing.T) {
	t.Parallel()
	s := startStubs(t, "-rate-limit-reads=2/m", "-rate-limit-writes=0")
	olga := dial(t, s.Addr, apptest.DialOptions(t, nil, apptest.Token(t, "olga", auth.Operator))...)
	list := rpc{full: profilev1.ProfileService_ListProfiles_FullMethodName}
	for i := 0; i < 2; i++ {
		require.Equal(t, codes.Unimplemented, status.Code(call(context.Background(), olga, list)))
	}
	st := status.Convert(call(context.Background(), olga, list))
	require.Equal(t, codes.ResourceExhausted, st.Code(), st.Message())
	assert.Contains(t, st.Message(), "rate limit of olga for read calls")
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	assert.InDelta(t, 30, delay.Seconds(), 1, "two a minute: the next in 30 s")

	other := dial(t, s.Addr, apptest.DialOptions(t, nil, apptest.Token(t, "oscar", auth.Operator))...)
	assert.Equal(t, codes.Unimplemented, status.Code(call(context.Background(), other, list)), "another caller")
	worker := dial(t, s.Addr, apptest.DialOptions(t, clientCert(t, "worker", "w1"), "")...)
	for i := 0; i < 5; i++ {
		assert.Equal(t, codes.Unimplemented, status.Code(call(context.Background(), worker, rpc{full: profilev1.ProfileService_RecordLoginResult_FullMethodName})), "writes: no limit")
	}
	v, ok := apptest.MetricValue(apptest.Scrape(t, s.MetricsAddr),
		`grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="ListProfiles",grpc_service="platforma.profile.v1.ProfileService",grpc_type="unary"}`)
	require.True(t, ok)
	assert.Equal(t, 1.0, v)
}

// An operator's read of the profiles leaves one audit line: who, what,
// which filter, never the page token; a worker's read leaves none. The
// call's own line names the caller.
func TestOperatorReadsLeaveOneAuditLine(t *testing.T) {
	t.Parallel()
	s := startStubs(t)
	olga := dial(t, s.Addr, apptest.DialOptions(t, nil, apptest.Token(t, "olga", auth.Operator))...)
	_, err := profilev1.NewProfileServiceClient(olga).ListProfiles(context.Background(), &profilev1.ListProfilesRequest{
		Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, PageSize: 20, PageToken: "cursor-abc",
	})
	require.Equal(t, codes.Unimplemented, status.Code(err))
	worker := dial(t, s.Addr, apptest.DialOptions(t, clientCert(t, "worker", "w1"), "")...)
	_, err = profilev1.NewProfileServiceClient(worker).GetProfile(context.Background(), &profilev1.GetProfileRequest{Id: "p"})
	require.Equal(t, codes.Unimplemented, status.Code(err))

	var audit []string
	for _, line := range strings.Split(s.Logs(), "\n") {
		if strings.Contains(line, "msg=audit") {
			audit = append(audit, line)
		}
	}
	require.Len(t, audit, 1, s.Logs())
	assert.Contains(t, audit[0], "level=INFO")
	assert.Contains(t, audit[0], "audit.subject=olga")
	assert.Contains(t, audit[0], "grpc.method=platforma.profile.v1.ProfileService/ListProfiles")
	assert.Contains(t, audit[0], `STABILITY_GRADE_CRITICAL`)
	assert.Contains(t, audit[0], `page_size`)
	assert.NotContains(t, s.Logs(), "cursor-abc")
	assert.Contains(t, s.Logs(), "auth.subject=olga", "the call's line names the caller")
}

// -insecure: plaintext, a WARN at start, and authentication still
// applies (bearer tokens only).
func TestInsecureServesPlaintextWithAWarningAndStillAuthenticates(t *testing.T) {
	t.Parallel()
	s := startStubs(t, "-insecure")
	assert.Contains(t, s.Logs(), "level=WARN msg=\"serving plaintext gRPC (INSECURE=true)")
	require.Equal(t, codes.Unimplemented, status.Code(call(context.Background(), s.Conn, rpc{full: profilev1.ProfileService_ListProfiles_FullMethodName})),
		"the token over plaintext")
	anonymous := dial(t, s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	assert.Equal(t, codes.Unauthenticated, status.Code(call(context.Background(), anonymous, rpc{full: profilev1.ProfileService_GetProfile_FullMethodName})))
}

// pprof is not on the metrics listener; with -pprof-addr it is on a
// loopback listener of its own.
func TestPprofIsOffByDefaultAndOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	get := func(url string) int {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		return resp.StatusCode
	}
	s := startStubs(t)
	assert.Equal(t, http.StatusNotFound, get("http://"+s.MetricsAddr+"/debug/pprof/"))
	assert.Empty(t, s.PprofAddr)

	s = startStubs(t, "-pprof-addr=127.0.0.1:0")
	assert.Equal(t, http.StatusNotFound, get("http://"+s.MetricsAddr+"/debug/pprof/"))
	assert.Equal(t, http.StatusOK, get("http://"+s.PprofAddr+"/debug/pprof/"))
	assert.True(t, strings.HasPrefix(s.PprofAddr, "127.0.0.1:"))
}

// The binary refuses to start when a registered method has no rule.
func TestServeRefusesAMethodWithoutARule(t *testing.T) {
	t.Parallel()
	svc := app.Service{
		Name: "norule", DefaultListenAddr: "127.0.0.1:0", DefaultMetricsAddr: "127.0.0.1:0",
		Migrations: migrations.Profile,
		Register: func(r server.Registrar, _ db.Pools) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, &testServer{})
			return nil
		},
	}
	var stderr bytes.Buffer
	code := app.Run(context.Background(), svc, app.Env{
		Args:   []string{"serve", "-insecure"},
		Getenv: envMap{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}.get,
		Stderr: &stderr,
	})
	assert.Equal(t, 1, code, stderr.String())
	assert.Contains(t, stderr.String(), "/grpc.testing.TestService/UnaryCall has no rule in the method table")
}

type envMap map[string]string

func (m envMap) get(k string) string { return m[k] }
