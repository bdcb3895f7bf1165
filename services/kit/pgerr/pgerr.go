// Package pgerr is everything the code knows about Postgres's SQLSTATE
// codes: their names, and how to ask an error for one. apierr classifies
// errors for clients with it; stores and migrations that must tell one
// failure from another (a duplicate key, a deadlock) ask it too, so no
// SQLSTATE literal appears anywhere else.
package pgerr

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATE codes the code tells apart, by their Postgres names
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	UniqueViolation        = "23505"
	ForeignKeyViolation    = "23503"
	SerializationFailure   = "40001"
	DeadlockDetected       = "40P01"
	LockNotAvailable       = "55P03"
	QueryCanceled          = "57014"
	TooManyConnections     = "53300"
	AdminShutdown          = "57P01"
	CrashShutdown          = "57P02"
	CannotConnectNow       = "57P03"
	IdleSessionTimeout     = "57P05"
	ReadOnlySQLTransaction = "25006"
	DuplicateObject        = "42710"
	InsufficientPrivilege  = "42501"
)

// Classes of SQLSTATE codes: their first two characters.
const (
	ClassConnectionException     = "08"
	ClassDataException           = "22"
	ClassIntegrityViolation      = "23"
	ClassTransactionRollback     = "40"
	ClassInsufficientResources   = "53"
	ClassSyntaxErrorOrAccessRule = "42"
	ClassOperatorIntervention    = "57"
	ClassSystemError             = "58"
)

// Code is err's SQLSTATE, or "" when err is no error from Postgres.
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Is reports whether err is a Postgres error with one of codes.
func Is(err error, codes ...string) bool {
	c := Code(err)
	if c == "" {
		return false
	}
	for _, want := range codes {
		if c == want {
			return true
		}
	}
	return false
}

// Class is the class of a SQLSTATE code, "" for a malformed one.
func Class(code string) string {
	if len(code) != 5 {
		return ""
	}
	return code[:2]
}

// InternalError is XX000: a failure inside Postgres itself.
const InternalError = "XX000"

// ConcurrentCatalogUpdate reports Postgres's "tuple concurrently updated":
// two sessions changing the same catalog row at once (two GRANTs to one
// role from two databases of a cluster). It has no SQLSTATE of its own,
// only XX000, so the message is the one way to know it; retrying is safe.
func ConcurrentCatalogUpdate(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == InternalError && strings.Contains(pgErr.Message, "concurrently")
}
