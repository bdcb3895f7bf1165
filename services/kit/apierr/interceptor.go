package apierr

import (
	"context"
	"errors"
	"log/slog"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UnaryServerInterceptor translates every handler error with ToStatus. It
// sits inside the logging and metrics interceptors, so they see the codes
// clients get.
//
// When the status hides the error's text from the client (a database
// error, a wrapped error), the cause travels with the returned error (see
// Cause) for the logging interceptor to put on the call's one line, at the
// level of its code (LogLevel). Without a logging interceptor around it,
// the interceptor logs the cause itself, at that same level.
func UnaryServerInterceptor(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, translate(ctx, logger, info.FullMethod, err)
		}
		return resp, nil
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming calls.
func StreamServerInterceptor(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := handler(srv, ss); err != nil {
			return translate(ss.Context(), logger, info.FullMethod, err)
		}
		return nil
	}
}

// LogLevel is the level a call that ended with code is logged at. Only
// the server's own faults are errors: anyone can send bad requests, so
// what a client causes must not be able to flood the error log.
//
//   - OK: debug (thousands per second would drown everything else);
//   - the client's mistakes and normal refusals (INVALID_ARGUMENT,
//     NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED,
//     OUT_OF_RANGE, PERMISSION_DENIED, UNAUTHENTICATED, UNIMPLEMENTED,
//     CANCELLED): info;
//   - overload and unavailability, the client's or the server's deadline
//     (RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED): warn, an
//     operator may need to act but no code is wrong;
//   - INTERNAL, UNKNOWN, DATA_LOSS and codes outside the standard ones:
//     error.
func LogLevel(c codes.Code) slog.Level {
	switch c {
	case codes.OK:
		return slog.LevelDebug
	case codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
		codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition,
		codes.Aborted, codes.OutOfRange, codes.Unimplemented:
		return slog.LevelInfo
	case codes.DeadlineExceeded, codes.ResourceExhausted, codes.Unavailable:
		return slog.LevelWarn
	default: // Unknown, Internal, DataLoss, anything unexpected
		return slog.LevelError
	}
}

// Cause returns the error a status returned by the interceptors hides from
// the client, or nil when the status tells the whole story.
func Cause(err error) error {
	var c *causeError
	if errors.As(err, &c) {
		return c.cause
	}
	return nil
}

// causeError is a status that carries the error it was made from. Its
// text and status are the client's; only Cause reaches the cause.
type causeError struct {
	st    *status.Status
	cause error
}

func (e *causeError) Error() string              { return e.st.Err().Error() }
func (e *causeError) GRPCStatus() *status.Status { return e.st }

func translate(ctx context.Context, logger *slog.Logger, method string, err error) error {
	st, _ := ToStatus(err)
	out := st.Err()
	if text := err.Error(); text == out.Error() || text == st.Message() {
		return out // the client is told everything: nothing hidden
	}
	// The logging interceptor injects its fields into the context of
	// the calls it logs; it will log the cause on the call's line.
	if logging.ExtractFields(ctx) == nil {
		logger.Log(ctx, LogLevel(st.Code()), "request failed",
			"grpc.method", method, "grpc.code", st.Code().String(), "cause", err.Error())
	}
	return &causeError{st: st, cause: err}
}
