package domain_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/internal/domain"
)

func TestIsRelayedLogin(t *testing.T) {
	t.Parallel()
	const (
		checkLogin = oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN
		validate   = oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION
		getReviews = oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS
	)
	for _, tc := range []struct {
		name    string
		op      oplogv1.OperationType
		account []byte
		want    bool
	}{
		{"check login with its account", checkLogin, []byte("acct-1"), true},
		{"validate session with its account", validate, []byte("acct-1"), true},
		{"check login before the account was known", checkLogin, nil, false},
		{"validate session with an empty account", validate, []byte{}, false},
		{"not a login, with an account", getReviews, []byte("acct-1"), false},
		{"not a login, without an account", getReviews, nil, false},
		{"unspecified operation", oplogv1.OperationType_OPERATION_TYPE_UNSPECIFIED, []byte("acct-1"), false},
		{"unknown operation number", oplogv1.OperationType(32000), []byte("acct-1"), false},
	} {
		assert.Equal(t, tc.want, domain.IsRelayedLogin(int16(tc.op), tc.account), tc.name)
	}
}

// Only CHECK_LOGIN and VALIDATE_SESSION are logins: a new operation type
// is not forwarded unless this rule says so.
func TestOnlyLoginOperationsAreRelayed(t *testing.T) {
	t.Parallel()
	logins := map[oplogv1.OperationType]bool{
		oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN:      true,
		oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION: true,
	}
	for n := range oplogv1.OperationType_name {
		op := oplogv1.OperationType(n)
		assert.Equal(t, logins[op], domain.IsRelayedLogin(int16(op), []byte("acct-1")), op.String())
	}
}
