// Package apierr is the one boundary where errors become gRPC statuses.
//
// Handlers and stores return plain Go errors: the domain outcomes their
// services declare (Outcome: a code and a reason clients may branch on),
// an InvalidArgument status for bad input, and whatever pgx returns. The
// server's innermost interceptor passes every error through ToStatus, which
// classifies Postgres errors by SQLSTATE and connection failures, maps them
// to standard gRPC codes and never lets SQL text reach a client.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/platforma/platforma/services/kit/pgerr"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Violations collects the invalid fields of one request. The zero value is
// ready to use.
type Violations struct {
	list []*errdetails.BadRequest_FieldViolation
	// outcome, when set, adds its reason (google.rpc.ErrorInfo) to the
	// status: a refusal a client may branch on.
	outcome *Outcome
}

// AddOutcome records that field is invalid for a reason clients may
// branch on (an INVALID_ARGUMENT outcome); the first such reason is sent.
func (v *Violations) AddOutcome(o *Outcome, field, description string) {
	v.Add(field, description)
	if v.outcome == nil {
		v.outcome = o
	}
}

// Add records that field is invalid, with a plain-words description.
func (v *Violations) Add(field, description string) {
	v.list = append(v.list, &errdetails.BadRequest_FieldViolation{Field: field, Description: description})
}

// Addf is Add with a formatted description.
func (v *Violations) Addf(field, format string, args ...any) {
	v.Add(field, fmt.Sprintf(format, args...))
}

// Empty reports whether no violation was added.
func (v *Violations) Empty() bool { return len(v.list) == 0 }

// List returns the violations added so far.
func (v *Violations) List() []*errdetails.BadRequest_FieldViolation { return v.list }

// Err returns nil when no violation was added, otherwise an INVALID_ARGUMENT
// status whose message names the fields and whose details carry a
// google.rpc.BadRequest with every violation.
func (v *Violations) Err() error {
	if v.Empty() {
		return nil
	}
	if v.outcome != nil {
		return &outcomeError{outcome: v.outcome, msg: violationsMessage(v.list), violations: v.list}
	}
	return InvalidArgument(v.list...)
}

// InvalidArgument builds an INVALID_ARGUMENT status carrying a
// google.rpc.BadRequest with the given field violations.
func InvalidArgument(violations ...*errdetails.BadRequest_FieldViolation) error {
	st := status.New(codes.InvalidArgument, violationsMessage(violations))
	withDetails, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: violations})
	if err != nil {
		// Only fails if the detail cannot be marshalled, which a
		// BadRequest always can; keep the plain status rather than lose it.
		return st.Err()
	}
	return withDetails.Err()
}

// violationsMessage names every field and what is wrong with it.
func violationsMessage(violations []*errdetails.BadRequest_FieldViolation) string {
	parts := make([]string, 0, len(violations))
	for _, fv := range violations {
		parts = append(parts, fv.GetField()+": "+fv.GetDescription())
	}
	return "invalid argument: " + strings.Join(parts, "; ")
}

// FieldViolation is a shorthand for one violation, for InvalidArgument.
func FieldViolation(field, description string) *errdetails.BadRequest_FieldViolation {
	return &errdetails.BadRequest_FieldViolation{Field: field, Description: description}
}

// Messages clients see for errors whose real text must stay on the server.
const (
	msgInternal         = "internal error"
	msgUnavailable      = "database unavailable; retry later"
	msgAborted          = "transaction conflict; retry"
	msgExhausted        = "database out of resources; retry later"
	msgInvalidValue     = "a value was rejected by the database"
	msgAlreadyExists    = "resource already exists"
	msgReferenceMissing = "a referenced resource does not exist"
	msgDeadline         = "deadline exceeded"
	msgCanceled         = "request canceled"
)

// ToStatus converts any error into a gRPC status. nil stays nil. The second
// result reports whether the error is the server's fault (Internal, Unknown
// or a database problem) so the caller can log the original error, which
// the status never carries.
func ToStatus(err error) (*status.Status, bool) {
	if err == nil {
		return nil, false
	}
	// Statuses built on purpose (InvalidArgument above, or a handler's own)
	// pass through unchanged.
	var withStatus interface{ GRPCStatus() *status.Status }
	if errors.As(err, &withStatus) {
		st := withStatus.GRPCStatus()
		return st, isServerFault(st.Code())
	}

	// Domain outcomes (Outcome) carry their own status and passed above.
	// A bare pgx.ErrNoRows is not one of them: a store that finds nothing
	// returns its domain's not-found outcome, so one that slips through is
	// a bug, answered INTERNAL below rather than guessed to be NOT_FOUND.

	// Connection trouble first: a failed connect may wrap a PgError (bad
	// password, missing database), and to the client every one of them
	// means the same thing: the database cannot be reached now.
	if isUnreachable(err) {
		return status.New(codes.Unavailable, msgUnavailable), true
	}

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		code, msg := classifySQLState(pgErr.Code)
		return status.New(code, msg), isServerFault(code)
	}

	// Context errors after Postgres errors: pgx reports a query cancelled
	// because its context ended as both.
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, msgCanceled), false
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		return status.New(codes.DeadlineExceeded, msgDeadline), false
	}
	return status.New(codes.Internal, msgInternal), true
}

// classifySQLState maps a SQLSTATE to a gRPC code and a message that is safe
// to show a client. https://www.postgresql.org/docs/current/errcodes-appendix.html
func classifySQLState(sqlState string) (codes.Code, string) {
	switch sqlState {
	case pgerr.UniqueViolation:
		return codes.AlreadyExists, msgAlreadyExists
	case pgerr.ForeignKeyViolation:
		return codes.FailedPrecondition, msgReferenceMissing
	case pgerr.SerializationFailure, pgerr.DeadlockDetected:
		return codes.Aborted, msgAborted
	case pgerr.LockNotAvailable: // lock_timeout
		return codes.Aborted, msgAborted
	case pgerr.QueryCanceled: // statement_timeout or a cancel request
		return codes.DeadlineExceeded, msgDeadline
	case pgerr.TooManyConnections:
		return codes.Unavailable, msgUnavailable
	case pgerr.AdminShutdown, pgerr.CrashShutdown, pgerr.CannotConnectNow, pgerr.IdleSessionTimeout:
		return codes.Unavailable, msgUnavailable
	case pgerr.ReadOnlySQLTransaction: // connected to a standby after a failover
		return codes.Unavailable, msgUnavailable
	}
	switch pgerr.Class(sqlState) {
	case pgerr.ClassConnectionException:
		return codes.Unavailable, msgUnavailable
	case pgerr.ClassDataException: // bad encoding, out of range, too long, ...
		return codes.InvalidArgument, msgInvalidValue
	case pgerr.ClassIntegrityViolation: // not null, check, exclusion
		return codes.InvalidArgument, msgInvalidValue
	case pgerr.ClassTransactionRollback:
		return codes.Aborted, msgAborted
	case pgerr.ClassInsufficientResources: // disk full, out of memory
		return codes.ResourceExhausted, msgExhausted
	case pgerr.ClassOperatorIntervention, pgerr.ClassSystemError: // shutdowns, I/O errors
		return codes.Unavailable, msgUnavailable
	}
	// 42 (syntax, undefined table, privileges), 25, XX, P0 and the rest are
	// bugs or misconfiguration on the server's side.
	return codes.Internal, msgInternal
}

// isUnreachable reports errors that mean no usable connection to Postgres.
func isUnreachable(err error) bool {
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr),
		errors.Is(err, puddle.ErrClosedPool),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &netErr) && !errors.Is(err, context.DeadlineExceeded):
		return true
	case pgconn.SafeToRetry(err):
		// pgx guarantees nothing reached the server: retrying is safe.
		return true
	}
	return false
}

func isServerFault(c codes.Code) bool {
	switch c {
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable, codes.ResourceExhausted:
		return true
	}
	return false
}
