package devpki_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/kit/tlsfiles"
)

type upDB struct{}

func (upDB) Ping(context.Context) error { return nil }

type echo struct {
	testgrpc.UnimplementedTestServiceServer
}

func (echo) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Username: auth.FromContext(ctx).Subject}, nil
}

// What `make run` gets from Generate works end to end: a server with the
// files of ServeFlags accepts the worker's and the relay's certificates
// and the operator's and admin's tokens.
func TestGeneratedFilesWorkTogether(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pki")
	f, err := devpki.Generate(dir, "profile.internal")
	require.NoError(t, err)

	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	for _, file := range []string{f.CA, f.ServerCert, f.ServerKey, f.WorkerCert, f.WorkerKey, f.OplogCert, f.OplogKey, f.JWKS, f.OperatorToken, f.AdminToken, f.WorkerToken} {
		fi, err := os.Stat(file)
		require.NoError(t, err, file)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), file)
	}
	flags := strings.Join(f.ServeFlags(), " ")
	for _, want := range []string{"-tls-cert-file=" + f.ServerCert, "-tls-client-ca-file=" + f.CA, "-jwks-file=" + f.JWKS, "-jwt-issuer=" + devpki.Issuer, "-jwt-audience=" + devpki.Audience} {
		assert.Contains(t, flags, want)
	}
	assert.Contains(t, strings.Join(f.RelayFlags(), " "), "-profile-tls-cert-file="+f.OplogCert)

	pair, err := tlsfiles.LoadKeyPair(f.ServerCert, f.ServerKey, 0, nil)
	require.NoError(t, err)
	assert.Contains(t, pair.Certificate().Leaf.DNSNames, "profile.internal")
	cas, err := tlsfiles.LoadPool(f.CA, 0, nil)
	require.NoError(t, err)
	a, err := auth.New(context.Background(), auth.Config{
		Methods: auth.Methods.With(auth.AllMethods(&testgrpc.TestService_ServiceDesc, auth.Rule{Roles: auth.Of(auth.Worker, auth.Service, auth.Operator, auth.Admin), Class: auth.ClassRead})),
		JWT:     &auth.JWTConfig{JWKSFile: f.JWKS, Issuer: f.Issuer, Audience: f.Audience},
	})
	require.NoError(t, err)
	srv, err := server.New(server.Config{
		ListenAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second,
		HealthInterval: time.Second, MaxRecvMsgSize: 1 << 20, TLS: tlsfiles.ServerConfig(pair, cas),
	}, server.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Database: upDB{}, Auth: a,
		Register: func(r server.Registrar) error { testgrpc.RegisterTestServiceServer(r.GRPC, echo{}); return nil },
	})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })

	callAs := func(opts ...grpc.DialOption) string {
		conn, err := grpc.NewClient(srv.Addr(), opts...)
		require.NoError(t, err)
		defer conn.Close()
		resp, err := testgrpc.NewTestServiceClient(conn).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		require.NoError(t, err)
		return resp.GetUsername()
	}
	withCert := func(certFile, keyFile string) grpc.DialOption {
		cfg, err := tlsfiles.ClientConfig(f.CA, certFile, keyFile, nil)
		require.NoError(t, err)
		return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
	}
	token := func(file string) grpc.DialOption {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		return grpc.WithPerRPCCredentials(devpki.Bearer{Token: strings.TrimSpace(string(b)), Secure: true})
	}
	assert.Equal(t, "spiffe://platforma/worker/dev-worker", callAs(withCert(f.WorkerCert, f.WorkerKey)))
	assert.Equal(t, "spiffe://platforma/service/oplog", callAs(withCert(f.OplogCert, f.OplogKey)))
	assert.Equal(t, "dev-operator", callAs(withCert("", ""), token(f.OperatorToken)))
	assert.Equal(t, "dev-admin", callAs(withCert("", ""), token(f.AdminToken)))
	assert.Equal(t, "dev-worker", callAs(withCert("", ""), token(f.WorkerToken)))
}
