package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/apierr"
)

// pgErr builds the error pgx returns for a server-side failure. Its message
// carries SQL-ish text that must never reach a client.
func pgErr(sqlState string) error {
	return fmt.Errorf("insert profile: %w", &pgconn.PgError{
		Severity: "ERROR",
		Code:     sqlState,
		Message:  `relation "profile.secret_table" violates SELECT * FROM users`,
	})
}

var (
	errThingNotFound = apierr.NewOutcome(codes.NotFound, "THING_NOT_FOUND")
	errNoReplies     = apierr.NewOutcome(codes.FailedPrecondition, "TAKES_NO_REPLIES")
	errIDConflict    = apierr.NewOutcome(codes.InvalidArgument, "ID_CONFLICT")
)

func TestToStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		err         error
		code        codes.Code
		serverFault bool
	}{
		// Errors built on purpose pass through.
		{"status passes through", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied, false},
		{"wrapped status passes through", fmt.Errorf("ctx: %w", status.Error(codes.OutOfRange, "no")), codes.OutOfRange, false},
		{"internal status is a server fault", status.Error(codes.Internal, "boom"), codes.Internal, true},
		// Domain outcomes.
		{"not found", errThingNotFound.Errorf(`thing "x" not found`), codes.NotFound, false},
		{"wrapped not found", fmt.Errorf("get: %w", errThingNotFound.Errorf("thing not found")), codes.NotFound, false},
		{"a bare outcome", errThingNotFound, codes.NotFound, false},
		{"failed precondition", errNoReplies.Errorf("type %s takes no replies", "PICKUP"), codes.FailedPrecondition, false},
		// A store maps "no rows" to its domain's not-found outcome; one
		// that slips through is a bug, not a guess at NOT_FOUND.
		{"a bare pgx no rows", fmt.Errorf("get: %w", pgx.ErrNoRows), codes.Internal, true},
		// Context.
		{"canceled", fmt.Errorf("query: %w", context.Canceled), codes.Canceled, false},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), codes.DeadlineExceeded, false},
		// One row per SQLSTATE class (and the specific codes we single out).
		{"08 connection exception", pgErr("08006"), codes.Unavailable, true},
		{"22 data exception (NUL byte)", pgErr("22021"), codes.InvalidArgument, false},
		{"22 string too long", pgErr("22001"), codes.InvalidArgument, false},
		{"23505 unique violation", pgErr("23505"), codes.AlreadyExists, false},
		{"23503 foreign key violation", pgErr("23503"), codes.FailedPrecondition, false},
		{"23514 check violation", pgErr("23514"), codes.InvalidArgument, false},
		{"25 invalid transaction state", pgErr("25P02"), codes.Internal, true},
		{"25006 read-only transaction", pgErr("25006"), codes.Unavailable, true},
		{"40001 serialization failure", pgErr("40001"), codes.Aborted, false},
		{"40P01 deadlock", pgErr("40P01"), codes.Aborted, false},
		{"40 other rollback", pgErr("40002"), codes.Aborted, false},
		{"42 undefined table", pgErr("42P01"), codes.Internal, true},
		{"42501 insufficient privilege", pgErr("42501"), codes.Internal, true},
		{"53300 too many connections", pgErr("53300"), codes.Unavailable, true},
		{"53 disk full", pgErr("53100"), codes.ResourceExhausted, true},
		{"55P03 lock not available", pgErr("55P03"), codes.Aborted, false},
		{"57014 query canceled", pgErr("57014"), codes.DeadlineExceeded, false},
		{"57P01 admin shutdown", pgErr("57P01"), codes.Unavailable, true},
		{"57P03 cannot connect now", pgErr("57P03"), codes.Unavailable, true},
		{"58 system error", pgErr("58030"), codes.Unavailable, true},
		{"P0 plpgsql raise", pgErr("P0001"), codes.Internal, true},
		{"XX internal error", pgErr("XX000"), codes.Internal, true},
		{"malformed SQLSTATE", pgErr("9"), codes.Internal, true},
		// Connection failures.
		{"closed pool", fmt.Errorf("acquire: %w", puddle.ErrClosedPool), codes.Unavailable, true},
		{"conn closed", fmt.Errorf("exec: %w", pgconn.ErrConnClosed), codes.Unavailable, true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, codes.Unavailable, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), codes.Unavailable, true},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), codes.Unavailable, true},
		// Anything else is a bug.
		{"plain error", errors.New(`syntax error at or near "SELEKT"`), codes.Internal, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, serverFault := apierr.ToStatus(tt.err)
			require.NotNil(t, st)
			assert.Equal(t, tt.code, st.Code(), "message: %s", st.Message())
			assert.Equal(t, tt.serverFault, serverFault)
			assert.NotContains(t, st.Message(), "SELECT", "SQL text leaked to the client")
			assert.NotContains(t, st.Message(), "secret_table", "SQL text leaked to the client")
			assert.NotContains(t, st.Message(), "SELEKT", "internal error text leaked to the client")
		})
	}
}

func TestToStatusConnectError(t *testing.T) {
	t.Parallel()
	// A failed connect is UNAVAILABLE whatever it wraps (refused, bad
	// password, missing database): the client can only retry later.
	st, serverFault := apierr.ToStatus(connectError(t))
	assert.Equal(t, codes.Unavailable, st.Code())
	assert.True(t, serverFault)
}

// connectError returns a real *pgconn.ConnectError by dialling a port
// nobody listens on.
func connectError(t *testing.T) error {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	_, err = pgconn.Connect(context.Background(), "postgres://nobody@"+addr+"/x?connect_timeout=2")
	var connectErr *pgconn.ConnectError
	require.ErrorAs(t, err, &connectErr)
	return err
}

func TestToStatusNil(t *testing.T) {
	t.Parallel()
	st, serverFault := apierr.ToStatus(nil)
	assert.Nil(t, st)
	assert.False(t, serverFault)
}

func TestViolations(t *testing.T) {
	t.Parallel()
	var v apierr.Violations
	require.NoError(t, v.Err(), "no violations, no error")

	v.Add("user_id", "must be a UUID")
	v.Addf("requests[2].occurred_at", "more than %d minutes in the future", 5)
	err := v.Err()
	require.Error(t, err)

	st := status.Convert(err)
	assert.Equal(t, codes.InvalidArgument, st.Code())
	assert.Contains(t, st.Message(), "user_id: must be a UUID")
	assert.Contains(t, st.Message(), "requests[2].occurred_at")

	require.Len(t, st.Details(), 1)
	br, ok := st.Details()[0].(*errdetails.BadRequest)
	require.True(t, ok, "detail is a google.rpc.BadRequest")
	require.Len(t, br.GetFieldViolations(), 2)
	assert.Equal(t, "user_id", br.GetFieldViolations()[0].GetField())
	assert.Equal(t, "requests[2].occurred_at", br.GetFieldViolations()[1].GetField())

	// The status survives ToStatus unchanged, details included.
	again, serverFault := apierr.ToStatus(err)
	assert.False(t, serverFault)
	assert.Equal(t, st.Proto().String(), again.Proto().String())
}

func TestItemError(t *testing.T) {
	t.Parallel()
	var v apierr.Violations
	v.Add("requests[2].user_id", "must be a UUID")
	item := apierr.ItemError(v.Err())
	assert.Equal(t, int32(codes.InvalidArgument), item.GetCode())
	require.Len(t, item.GetFieldViolations(), 1)
	assert.Equal(t, "requests[2].user_id", item.GetFieldViolations()[0].GetField())

	item = apierr.ItemError(errNoReplies.Errorf("type PICKUP takes no replies"))
	assert.Equal(t, int32(codes.FailedPrecondition), item.GetCode())
	assert.Equal(t, "type PICKUP takes no replies", item.GetMessage())
	assert.Empty(t, item.GetFieldViolations())

	item = apierr.ItemError(pgErr("XX000"))
	assert.Equal(t, int32(codes.Internal), item.GetCode())
	assert.NotContains(t, item.GetMessage(), "SELECT")
}

// An outcome reaches the client with its code, the case's message and its
// reason as google.rpc.ErrorInfo, and callers recognise it with errors.Is.
func TestOutcomesCarryTheirReason(t *testing.T) {
	t.Parallel()
	reasonOf := func(err error) (codes.Code, string, string) {
		st, serverFault := apierr.ToStatus(err)
		assert.False(t, serverFault)
		return st.Code(), st.Message(), apierr.Reason(st)
	}
	err := fmt.Errorf("store: %w", errThingNotFound.Errorf(`thing "x" not found`))
	assert.ErrorIs(t, err, errThingNotFound)
	assert.NotErrorIs(t, err, errNoReplies)
	code, msg, reason := reasonOf(err)
	assert.Equal(t, codes.NotFound, code)
	assert.Equal(t, `thing "x" not found`, msg)
	assert.Equal(t, "THING_NOT_FOUND", reason)
	st, _ := apierr.ToStatus(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			assert.Equal(t, apierr.ErrorDomain, info.GetDomain())
		}
	}

	// A field refused for a reason: BadRequest and ErrorInfo both.
	err = errIDConflict.Field("requests[1].event_id", "already recorded for another account")
	st, _ = apierr.ToStatus(err)
	assert.Equal(t, codes.InvalidArgument, st.Code())
	assert.Equal(t, "ID_CONFLICT", apierr.Reason(st))
	require.Len(t, apierr.FieldViolations(st), 1)
	assert.Equal(t, "requests[1].event_id", apierr.FieldViolations(st)[0].GetField())
	item := apierr.ItemError(err)
	assert.Equal(t, "ID_CONFLICT", item.GetReason())
	assert.Equal(t, "requests[1].event_id", item.GetFieldViolations()[0].GetField())

	// Violations with one that has a reason: every field, and the reason.
	var v apierr.Violations
	v.Add("user_id", "must be a UUID")
	v.AddOutcome(errIDConflict, "event_id", "reused")
	st, _ = apierr.ToStatus(v.Err())
	assert.Equal(t, codes.InvalidArgument, st.Code())
	assert.Equal(t, "ID_CONFLICT", apierr.Reason(st))
	assert.Len(t, apierr.FieldViolations(st), 2)
	assert.Equal(t, "invalid argument: user_id: must be a UUID; event_id: reused", st.Message())

	// Plain violations have no reason.
	var plain apierr.Violations
	plain.Add("user_id", "must be a UUID")
	st, _ = apierr.ToStatus(plain.Err())
	assert.Empty(t, apierr.Reason(st))
}
