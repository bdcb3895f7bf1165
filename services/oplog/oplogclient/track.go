package oplogclient

import (
	"context"
	"errors"
	"fmt"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
)

// Error is an operation failure with the error type and code the log
// should record. Wrap failures in it (or implement ErrorType() string) so
// Track can classify them.
type Error struct {
	Type string // e.g. "TIMEOUT", "SELECTOR_NOT_FOUND", "AUTH_REQUIRED"
	Code *int32
	Err  error
}

// Errorf returns an *Error of type typ with a formatted message.
func Errorf(typ, format string, args ...any) error {
	return &Error{Type: typ, Err: fmt.Errorf(format, args...)}
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Type
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorType returns the type to log for e.
func (e *Error) ErrorType() string { return e.Type }

// ErrorType classifies err for the log: the first error in its chain with
// an ErrorType() method names itself; an expired context is "TIMEOUT", a
// cancelled one "CANCELED"; anything else "UNKNOWN".
func ErrorType(err error) string {
	var typed interface{ ErrorType() string }
	switch {
	case err == nil:
		return ""
	case errors.As(err, &typed) && typed.ErrorType() != "":
		return typed.ErrorType()
	case errors.Is(err, context.DeadlineExceeded):
		return "TIMEOUT"
	case errors.Is(err, context.Canceled):
		return "CANCELED"
	default:
		return "UNKNOWN"
	}
}

// Track runs op, then logs e with the outcome, error type and message,
// error code and duration filled in, and returns op's error unchanged:
// the try/catch logging of every operation in one call. Fields already
// set in e are kept.
func (c *Client) Track(ctx context.Context, e Entry, op func(context.Context) error) error {
	start := c.opts.now()
	err := op(ctx)
	if e.CreateTime.IsZero() {
		e.CreateTime = start
	}
	e.ExecutionTime = c.opts.now().Sub(start)
	if err == nil {
		e.Outcome = commonv1.Outcome_OUTCOME_SUCCESS
	} else {
		e.Outcome = commonv1.Outcome_OUTCOME_FAILED
		if e.ErrorType == "" {
			e.ErrorType = ErrorType(err)
		}
		if e.ErrorMessage == "" {
			e.ErrorMessage = err.Error()
		}
		var typed *Error
		if e.ErrorCode == nil && errors.As(err, &typed) {
			e.ErrorCode = typed.Code
		}
	}
	c.Log(ctx, e)
	return err
}
