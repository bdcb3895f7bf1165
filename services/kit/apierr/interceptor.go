package apierr

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor translates every handler error with ToStatus. It
// is the innermost interceptor, so logging and metrics see final codes.
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

func translate(ctx context.Context, logger *slog.Logger, method string, err error) error {
	st, serverFault := ToStatus(err)
	if serverFault {
		// The client only sees a generic message; keep the real cause here.
		logger.ErrorContext(ctx, "request failed", "grpc.method", method, "grpc.code", st.Code().String(), "error", err)
	}
	return st.Err()
}
