// Package apierr is the one boundary where errors become gRPC statuses.
//
// Handlers and stores return plain Go errors: the typed errors of this
// package for domain outcomes (not found, failed precondition), an
// InvalidArgument status for bad input, and whatever pgx returns. The
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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NotFoundError reports that a resource does not exist.
type NotFoundError struct {
	// Resource is the kind of thing looked for, e.g. "profile".
	Resource string
	// Key says how it was looked for, e.g. `id "0195..."`.
	Key string
}

func (e *NotFoundError) Error() string {
	if e.Key == "" {
		return e.Resource + " not found"
	}
	return fmt.Sprintf("%s %s not found", e.Resource, e.Key)
}

// NotFound returns a *NotFoundError.
func NotFound(resource, key string) error {
	return &NotFoundError{Resource: resource, Key: key}
}

// FailedPreconditionError reports a request that is valid but cannot be
// applied in the current state of the system.
type FailedPreconditionError struct {
	Reason string
}

func (e *FailedPreconditionError) Error() string { return e.Reason }

// FailedPrecondition returns a *FailedPreconditionError.
func FailedPrecondition(format string, args ...any) error {
	return &FailedPreconditionError{Reason: fmt.Sprintf(format, args...)}
}

// Violations collects the invalid fields of one request. The zero value is
// ready to use.
type Violations struct {
	list []*errdetails.BadRequest_FieldViolation
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
	return InvalidArgument(v.list...)
}

// InvalidArgument builds an INVALID_ARGUMENT status carrying a
// google.rpc.BadRequest with the given field violations.
func InvalidArgument(violations ...*errdetails.BadRequest_FieldViolation) error {
	parts := make([]string, 0, len(violations))
	for _, fv := range violations {
		parts = append(parts, fv.GetField()+": "+fv.GetDescription())
	}
	st := status.New(codes.InvalidArgument, "invalid argument: "+strings.Join(parts, "; "))
	withDetails, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: violations})
	if err != nil {
		// Only fails if the detail cannot be marshalled, which a
		// BadRequest always can; keep the plain status rather than lose it.
		return st.Err()
	}
	return withDetails.Err()
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

	var notFound *NotFoundError
	var precondition *FailedPreconditionError
	switch {
	case errors.As(err, &notFound):
		return status.New(codes.NotFound, notFound.Error()), false
	case errors.As(err, &precondition):
		return status.New(codes.FailedPrecondition, precondition.Reason), false
	case errors.Is(err, pgx.ErrNoRows):
		return status.New(codes.NotFound, "not found"), false
	}

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
	case "23505": // unique_violation
		return codes.AlreadyExists, msgAlreadyExists
	case "23503": // foreign_key_violation
		return codes.FailedPrecondition, msgReferenceMissing
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return codes.Aborted, msgAborted
	case "55P03": // lock_not_available (lock_timeout)
		return codes.Aborted, msgAborted
	case "57014": // query_canceled: statement_timeout or a cancel request
		return codes.DeadlineExceeded, msgDeadline
	case "53300": // too_many_connections
		return codes.Unavailable, msgUnavailable
	case "57P01", "57P02", "57P03", "57P05": // admin/crash shutdown, cannot_connect_now, idle_session_timeout
		return codes.Unavailable, msgUnavailable
	case "25006": // read_only_sql_transaction: connected to a standby after failover
		return codes.Unavailable, msgUnavailable
	}
	if len(sqlState) != 5 {
		return codes.Internal, msgInternal
	}
	switch sqlState[:2] {
	case "08": // connection_exception
		return codes.Unavailable, msgUnavailable
	case "22": // data_exception: bad encoding, out of range, too long, ...
		return codes.InvalidArgument, msgInvalidValue
	case "23": // integrity_constraint_violation: not null, check, exclusion
		return codes.InvalidArgument, msgInvalidValue
	case "40": // transaction_rollback
		return codes.Aborted, msgAborted
	case "53": // insufficient_resources: disk full, out of memory
		return codes.ResourceExhausted, msgExhausted
	case "57", "58": // operator_intervention, system_error (I/O)
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
