package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/server"
)

func TestLevelForCode(t *testing.T) {
	t.Parallel()
	want := map[codes.Code]string{
		codes.OK:                 "DEBUG",
		codes.Canceled:           "INFO",
		codes.InvalidArgument:    "INFO",
		codes.NotFound:           "INFO",
		codes.AlreadyExists:      "INFO",
		codes.PermissionDenied:   "INFO",
		codes.FailedPrecondition: "INFO",
		codes.Aborted:            "INFO",
		codes.OutOfRange:         "INFO",
		codes.Unimplemented:      "INFO",
		codes.Unauthenticated:    "INFO",
		codes.DeadlineExceeded:   "WARN",
		codes.ResourceExhausted:  "WARN",
		codes.Unavailable:        "WARN",
		codes.Unknown:            "ERROR",
		codes.Internal:           "ERROR",
		codes.DataLoss:           "ERROR",
		codes.Code(99):           "ERROR",
	}
	for c, level := range want {
		assert.Equal(t, level, slog.Level(server.LevelForCode(c)).String(), c.String())
	}
}

// Every kind of failure through a real server: one line per call, at the
// level of who caused it, with what the client was not told; never an
// ERROR line for what a client can cause.
func TestFailuresAreLoggedAtTheLevelOfTheirCause(t *testing.T) {
	t.Parallel()
	unreachable := fmt.Errorf("acquire connection: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	tests := []struct {
		name  string
		err   error // what the handler returns
		code  codes.Code
		level string
		cause string // on the line, never in the client's message
	}{
		{name: "ok", code: codes.OK, level: "DEBUG"},
		{name: "invalid argument", err: apierr.InvalidArgument(apierr.FieldViolation("id", "not a UUID")), code: codes.InvalidArgument, level: "INFO"},
		{name: "not found", err: apierr.NewOutcome(codes.NotFound, "PROFILE_NOT_FOUND").Errorf(`profile id "x" not found`), code: codes.NotFound, level: "INFO"},
		{name: "failed precondition", err: apierr.NewOutcome(codes.FailedPrecondition, "REVIEW_TYPE_TAKES_NO_REPLIES").Errorf("PICKUP reviews take no replies"), code: codes.FailedPrecondition, level: "INFO"},
		{name: "already exists", err: &pgconn.PgError{Code: "23505", Message: "duplicate key value violates unique constraint"}, code: codes.AlreadyExists, level: "INFO", cause: "duplicate key value"},
		{name: "data exception", err: &pgconn.PgError{Code: "22P02", Message: "invalid input syntax for type uuid"}, code: codes.InvalidArgument, level: "INFO", cause: "invalid input syntax"},
		{name: "serialization failure", err: &pgconn.PgError{Code: "40001", Message: "could not serialize access"}, code: codes.Aborted, level: "INFO", cause: "could not serialize"},
		{name: "permission denied", err: status.Error(codes.PermissionDenied, "no"), code: codes.PermissionDenied, level: "INFO"},
		{name: "unauthenticated", err: status.Error(codes.Unauthenticated, "who?"), code: codes.Unauthenticated, level: "INFO"},
		{name: "out of range", err: status.Error(codes.OutOfRange, "past the end"), code: codes.OutOfRange, level: "INFO"},
		{name: "unimplemented", err: status.Error(codes.Unimplemented, "not here"), code: codes.Unimplemented, level: "INFO"},
		{name: "client canceled", err: context.Canceled, code: codes.Canceled, level: "INFO", cause: "context canceled"},
		{name: "overloaded on purpose", err: status.Error(codes.ResourceExhausted, "ingest is saturated; resend after the retry delay"), code: codes.ResourceExhausted, level: "WARN"},
		{name: "database out of disk", err: &pgconn.PgError{Code: "53100", Message: "could not extend file"}, code: codes.ResourceExhausted, level: "WARN", cause: "could not extend file"},
		{name: "database unreachable", err: unreachable, code: codes.Unavailable, level: "WARN", cause: "connection refused"},
		{name: "too many connections", err: &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}, code: codes.Unavailable, level: "WARN", cause: "too many clients"},
		{name: "deadline", err: context.DeadlineExceeded, code: codes.DeadlineExceeded, level: "WARN", cause: "context deadline exceeded"},
		{name: "bug", err: errors.New("assignment to entry in nil map"), code: codes.Internal, level: "ERROR", cause: "nil map"},
		{name: "bad SQL", err: &pgconn.PgError{Code: "42P01", Message: `relation "profiles" does not exist`}, code: codes.Internal, level: "ERROR", cause: "does not exist"},
		{name: "unknown", err: status.Error(codes.Unknown, "?"), code: codes.Unknown, level: "ERROR"},
		{name: "data loss", err: status.Error(codes.DataLoss, "torn page"), code: codes.DataLoss, level: "ERROR"},
	}
	byName := map[string]error{}
	for _, tt := range tests {
		byName[tt.name] = tt.err
	}
	svc := &testServer{unary: func(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if err := byName[string(req.GetPayload().GetBody())]; err != nil {
			return nil, err
		}
		return &testgrpc.SimpleResponse{}, nil
	}}
	o := serveObserved(t, svc, nil)
	client := testgrpc.NewTestServiceClient(o.conn)

	// The lines about calls; health's "database reachable" may come
	// in between.
	callLines := func() []map[string]any {
		var out []map[string]any
		for _, l := range o.lines(t) {
			if _, ok := l["grpc.method"]; ok {
				out = append(out, l)
			}
		}
		return out
	}
	for _, tt := range tests {
		before := len(callLines())
		_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(tt.name)}})
		require.Equal(t, tt.code, status.Code(err), "%s: %v", tt.name, err)
		if tt.cause != "" {
			assert.NotContains(t, status.Convert(err).Message(), tt.cause, "%s: the client is not told", tt.name)
		}
		// The line is written before the answer leaves the server.
		lines := callLines()[before:]
		require.Len(t, lines, 1, "%s: one line per call: %v", tt.name, lines)
		line := lines[0]
		assert.Equal(t, "finished call", line["msg"], tt.name)
		assert.Equal(t, tt.code.String(), line["grpc.code"], tt.name)
		assert.Equal(t, tt.level, line["level"], tt.name)
		if tt.cause != "" {
			assert.Contains(t, fmt.Sprint(line["cause"]), tt.cause, "%s: the line says what the client was not told", tt.name)
		} else {
			assert.NotContains(t, line, "cause", tt.name)
		}
	}
	for _, line := range o.lines(t) {
		if line["level"] == "ERROR" {
			assert.Contains(t, []string{"Internal", "Unknown", "DataLoss"}, line["grpc.code"], "ERROR only for server faults: %v", line)
		}
	}
	assert.Empty(t, o.linesWhere(t, "msg", "request failed"), "no second line per failure")
}

// A panic is caught inside logging and metrics: logged and counted as
// the INTERNAL the client gets. This pins the interceptor order.
func TestPanicIsLoggedAndCountedAsInternal(t *testing.T) {
	t.Parallel()
	svc := &testServer{unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		panic("handler bug")
	}}
	o := serveObserved(t, svc, nil)
	_, err := testgrpc.NewTestServiceClient(o.conn).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	require.Equal(t, codes.Internal, status.Code(err))
	assert.NotContains(t, status.Convert(err).Message(), "handler bug")

	finished := o.linesWhere(t, "msg", "finished call", "grpc.method", "UnaryCall")
	require.Len(t, finished, 1, o.logs.String())
	assert.Equal(t, "Internal", finished[0]["grpc.code"])
	assert.Equal(t, "ERROR", finished[0]["level"])
	panics := o.linesWhere(t, "msg", "panic in gRPC handler")
	require.Len(t, panics, 1)
	assert.Contains(t, panics[0]["stack"], "runtime/debug.Stack")

	metrics := scrape(t, o.srv.MetricsAddr())
	assert.Contains(t, metrics, "grpc_server_panics_recovered_total 1")
	assert.Contains(t, metrics, `grpc_server_handled_total{grpc_code="Internal",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`)

	// Authentication, authorization and the rate limit sit inside logging
	// and metrics and outside recovery and the handler: refusals are
	// logged and counted and never reach the handler; an admitted call's
	// panic is still recovered, and its line names the caller.
	var reached atomic.Int32
	svc = &testServer{unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		reached.Add(1)
		panic("handler bug")
	}}
	o = serveObserved(t, svc, func(_ *server.Config, opts *server.Options) {
		p := apptest.PKI(t)
		a, err := auth.New(context.Background(), auth.Config{
			Methods:    auth.Methods.With(auth.AllMethods(&testgrpc.TestService_ServiceDesc, auth.Rule{Roles: auth.Of(auth.Worker), Class: auth.ClassWrite})),
			JWT:        &auth.JWTConfig{JWKS: p.JWKS(), Issuer: p.Issuer, Audience: p.Audience},
			RateLimits: auth.RateLimits{Write: auth.RateLimit{Rate: 0.001, Burst: 1}},
			Logger:     opts.Logger,
		})
		require.NoError(t, err)
		opts.WithoutAuth, opts.Auth = false, a
	})
	client := testgrpc.NewTestServiceClient(o.conn)
	_, err = client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	as := func(roles ...auth.Role) grpc.CallOption {
		return grpc.PerRPCCredentials(devpki.Bearer{Token: apptest.Token(t, "caller", roles...)})
	}
	_, err = client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}, as(auth.Operator))
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	_, err = client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}, as(auth.Worker))
	require.Equal(t, codes.Internal, status.Code(err), "admitted, then the panic")
	_, err = client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}, as(auth.Worker))
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "a burst of one")
	assert.Equal(t, int32(1), reached.Load(), "refused calls never reach the handler")

	finished = o.linesWhere(t, "msg", "finished call", "grpc.method", "UnaryCall")
	require.Len(t, finished, 4, o.logs.String())
	for i, want := range []struct{ code, level, caller string }{
		{"Unauthenticated", "INFO", ""},
		{"PermissionDenied", "INFO", "caller"},
		{"Internal", "ERROR", "caller"},
		{"ResourceExhausted", "WARN", "caller"},
	} {
		assert.Equal(t, want.code, finished[i]["grpc.code"])
		assert.Equal(t, want.level, finished[i]["level"])
		if want.caller == "" {
			assert.NotContains(t, finished[i], "auth.subject")
		} else {
			assert.Equal(t, want.caller, finished[i]["auth.subject"])
		}
	}
	metrics = scrape(t, o.srv.MetricsAddr())
	for _, code := range []string{"Unauthenticated", "PermissionDenied", "Internal", "ResourceExhausted"} {
		assert.Contains(t, metrics, `grpc_server_handled_total{grpc_code="`+code+`",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`)
	}
	assert.Contains(t, metrics, "grpc_server_panics_recovered_total 1")
}

func TestPanicInAStreamIsLoggedAndCountedAsInternal(t *testing.T) {
	t.Parallel()
	o := serveObserved(t, &testServer{}, func(_ *server.Config, opts *server.Options) {
		opts.Register = func(r server.Registrar) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, panickyStream{})
			return nil
		}
	})
	stream, err := testgrpc.NewTestServiceClient(o.conn).StreamingOutputCall(context.Background(), &testgrpc.StreamingOutputCallRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Internal, status.Code(err))

	finished := o.linesWhere(t, "msg", "finished call", "grpc.method", "StreamingOutputCall")
	require.Len(t, finished, 1, o.logs.String())
	assert.Equal(t, "Internal", finished[0]["grpc.code"])
	metrics := scrape(t, o.srv.MetricsAddr())
	assert.Contains(t, metrics, "grpc_server_panics_recovered_total 1")
	assert.Contains(t, metrics, `grpc_server_handled_total{grpc_code="Internal",grpc_method="StreamingOutputCall",grpc_service="grpc.testing.TestService",grpc_type="server_stream"} 1`)
}

type panickyStream struct {
	testgrpc.UnimplementedTestServiceServer
}

func (panickyStream) StreamingOutputCall(*testgrpc.StreamingOutputCallRequest, testgrpc.TestService_StreamingOutputCallServer) error {
	panic(strings.Repeat("bug", 2))
}
