package domain_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/internal/domain"
)

func TestIsLogin(t *testing.T) {
	t.Parallel()
	logins := map[oplogv1.OperationType]bool{
		oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN:      true,
		oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION: true,
	}
	for n := range oplogv1.OperationType_name {
		op := oplogv1.OperationType(n)
		assert.Equal(t, logins[op], domain.IsLogin(int16(op)), op.String())
	}
}
