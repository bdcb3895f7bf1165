package pgerr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"

	"github.com/platforma/platforma/services/kit/pgerr"
)

func TestCodeAndIs(t *testing.T) {
	t.Parallel()
	wrapped := fmt.Errorf("insert: %w", &pgconn.PgError{Code: pgerr.UniqueViolation})
	for _, tt := range []struct {
		name string
		err  error
		code string
		is   []string
		want bool
	}{
		{"wrapped unique violation", wrapped, pgerr.UniqueViolation, []string{pgerr.DeadlockDetected, pgerr.UniqueViolation}, true},
		{"another code", wrapped, pgerr.UniqueViolation, []string{pgerr.DeadlockDetected}, false},
		{"not from Postgres", errors.New("boom"), "", []string{pgerr.UniqueViolation}, false},
		{"nil", nil, "", []string{pgerr.UniqueViolation}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.code, pgerr.Code(tt.err))
			assert.Equal(t, tt.want, pgerr.Is(tt.err, tt.is...))
		})
	}
	assert.Equal(t, pgerr.ClassIntegrityViolation, pgerr.Class(pgerr.UniqueViolation))
	assert.Equal(t, "", pgerr.Class("XX"))
}
