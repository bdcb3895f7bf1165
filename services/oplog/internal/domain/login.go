// Package domain holds OpLogService's rules as plain functions.
package domain

import oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"

// IsLogin reports whether rows of an operation type are login outcomes,
// which the login relay forwards to ProfileService when they name their
// account.
func IsLogin(operationType int16) bool {
	switch oplogv1.OperationType(operationType) {
	case oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN, oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION:
		return true
	}
	return false
}
