package apierr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/apierr"
)

func TestLogLevel(t *testing.T) {
	t.Parallel()
	for c, want := range map[codes.Code]slog.Level{
		codes.OK:                 slog.LevelDebug,
		codes.Canceled:           slog.LevelInfo,
		codes.InvalidArgument:    slog.LevelInfo,
		codes.NotFound:           slog.LevelInfo,
		codes.AlreadyExists:      slog.LevelInfo,
		codes.PermissionDenied:   slog.LevelInfo,
		codes.Unauthenticated:    slog.LevelInfo,
		codes.FailedPrecondition: slog.LevelInfo,
		codes.Aborted:            slog.LevelInfo,
		codes.OutOfRange:         slog.LevelInfo,
		codes.Unimplemented:      slog.LevelInfo,
		codes.DeadlineExceeded:   slog.LevelWarn,
		codes.ResourceExhausted:  slog.LevelWarn,
		codes.Unavailable:        slog.LevelWarn,
		codes.Unknown:            slog.LevelError,
		codes.Internal:           slog.LevelError,
		codes.DataLoss:           slog.LevelError,
		codes.Code(42):           slog.LevelError,
	} {
		assert.Equal(t, want, apierr.LogLevel(c), c.String())
	}
}

// Without a logging interceptor around it, the interceptor logs what the
// client was not told, at the level of the code: an unreachable database
// is a warning, not an error; a client's refusal never an error.
func TestInterceptorLogsHiddenCausesAtTheirLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		err   error
		code  codes.Code
		level string // "" for no line
	}{
		{"status on purpose", status.Error(codes.ResourceExhausted, "ingest is saturated"), codes.ResourceExhausted, ""},
		{"invalid argument", apierr.InvalidArgument(apierr.FieldViolation("id", "bad")), codes.InvalidArgument, ""},
		{"not found", errThingNotFound.Errorf(`profile id "x" not found`), codes.NotFound, ""},
		{"failed precondition", errNoReplies.Errorf("no replies"), codes.FailedPrecondition, ""},
		{"database unreachable", fmt.Errorf("acquire: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), codes.Unavailable, "WARN"},
		{"database out of disk", &pgconn.PgError{Code: "53100", Message: "could not extend file"}, codes.ResourceExhausted, "WARN"},
		{"unique violation", &pgconn.PgError{Code: "23505", Message: "duplicate key"}, codes.AlreadyExists, "INFO"},
		{"bug", errors.New("nil map"), codes.Internal, "ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			intercept := apierr.UnaryServerInterceptor(logger)
			_, err := intercept(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/svc/M"},
				func(context.Context, any) (any, error) { return nil, tt.err })
			require.Equal(t, tt.code, status.Code(err))

			if tt.level == "" {
				assert.Empty(t, buf.String())
				assert.NoError(t, apierr.Cause(err))
				return
			}
			var line map[string]any
			require.NoError(t, json.Unmarshal(buf.Bytes(), &line), buf.String())
			assert.Equal(t, tt.level, line["level"])
			assert.Equal(t, "request failed", line["msg"])
			assert.Equal(t, tt.err.Error(), line["cause"])
			assert.Equal(t, tt.err, apierr.Cause(err))
			assert.NotContains(t, status.Convert(err).Message(), tt.err.Error(), "the client is not told")
		})
	}
}

// Inside the logging interceptor, the cause goes with the error for the
// call's one line; the interceptor writes none of its own.
func TestInterceptorLeavesTheLineToTheLoggingInterceptor(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	cause := &pgconn.PgError{Code: "08006", Message: "connection failure"}
	ctx := logging.InjectFields(context.Background(), logging.Fields{"grpc.method", "M"})

	_, err := apierr.UnaryServerInterceptor(logger)(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/svc/M"},
		func(context.Context, any) (any, error) { return nil, cause })
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Empty(t, buf.String())
	assert.Equal(t, cause, apierr.Cause(err))
	assert.False(t, strings.Contains(err.Error(), "connection failure"), "the error's text is the client's: %v", err)

	// Streams too.
	err = apierr.StreamServerInterceptor(logger)(nil, ctxStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: "/svc/S"},
		func(any, grpc.ServerStream) error { return cause })
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Empty(t, buf.String())
	assert.Equal(t, cause, apierr.Cause(err))
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }
