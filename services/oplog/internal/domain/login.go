// Package domain holds OpLogService's rules as plain functions.
package domain

import oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"

// IsRelayedLogin reports whether a row is a login outcome the login relay
// forwards to ProfileService: a login operation (CHECK_LOGIN or
// VALIDATE_SESSION) that names its platform account. A login check that
// failed before the account was known has no profile to move, so it stays
// in the log only. platformAccountID is as the row carries it (bytes of
// the received message, empty when the row has none).
func IsRelayedLogin(operationType int16, platformAccountID []byte) bool {
	switch oplogv1.OperationType(operationType) {
	case oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN, oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION:
		return len(platformAccountID) > 0
	}
	return false
}
