// Package validate checks request fields and records what is wrong with
// them as field violations. Everything a client sends passes through here
// before it reaches SQL: Postgres cannot store NUL bytes or invalid UTF-8
// in text, and unbounded strings are a cost every reader pays.
package validate

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/platforma/platforma/services/kit/apierr"
)

// UUID parses s, which must be a UUID in its canonical 36-character form
// (either case). An empty s is reported as missing.
func UUID(v *apierr.Violations, field, s string) (uuid.UUID, bool) {
	if s == "" {
		v.Add(field, "required")
		return uuid.Nil, false
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		v.Add(field, "must be a UUID like 0191d2c4-7b1e-7c3a-9f4e-2d5b6a7c8d9e")
		return uuid.Nil, false
	}
	return id, true
}

// Timestamp converts a required timestamp, refusing missing or
// out-of-range values (Postgres keeps microseconds; sub-microsecond digits
// are dropped by the database).
func Timestamp(v *apierr.Violations, field string, ts *timestamppb.Timestamp) (time.Time, bool) {
	if ts == nil {
		v.Add(field, "required")
		return time.Time{}, false
	}
	if err := ts.CheckValid(); err != nil {
		v.Add(field, "not a valid timestamp")
		return time.Time{}, false
	}
	return ts.AsTime(), true
}

// Within reports whether t lies in [now-maxAge, now+maxSkew]. A t older
// than maxAge is refused with tooOld's reason when tooOld is given: a
// refusal a client can tell from a malformed time (a retry of it can
// never succeed).
func Within(v *apierr.Violations, field string, t, now time.Time, maxAge, maxSkew time.Duration, tooOld *apierr.Outcome) bool {
	switch {
	case t.After(now.Add(maxSkew)):
		v.Addf(field, "more than %s in the future", maxSkew)
	case t.Before(now.Add(-maxAge)) && tooOld != nil:
		v.AddOutcome(tooOld, field, fmt.Sprintf("older than %s", maxAge))
	case t.Before(now.Add(-maxAge)):
		v.Addf(field, "older than %s", maxAge)
	default:
		return true
	}
	return false
}

// Enum checks that e is a value its enum declares; with required, also
// that it is not the zero (UNSPECIFIED) value. Clients on old or foreign
// stubs can send numbers the server does not know.
func Enum(v *apierr.Violations, field string, e protoreflect.Enum, required bool) bool {
	n := e.Number()
	desc := e.Descriptor()
	if desc.Values().ByNumber(n) == nil {
		v.Add(field, fmt.Sprintf("unknown %s value %d", desc.Name(), n))
		return false
	}
	if required && n == 0 {
		v.Add(field, "required")
		return false
	}
	return true
}

// Page sizes of every List RPC.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// PageSize returns the page size to use: DefaultPageSize for 0, the given
// size up to MaxPageSize; anything else is a violation.
func PageSize(v *apierr.Violations, field string, size int32) int {
	switch {
	case size < 0:
		v.Add(field, "must not be negative")
	case size > MaxPageSize:
		v.Addf(field, "at most %d", MaxPageSize)
	case size > 0:
		return int(size)
	}
	return DefaultPageSize
}
