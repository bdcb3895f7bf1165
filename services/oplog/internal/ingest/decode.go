package ingest

import (
	"errors"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/store"
	"github.com/platforma/platforma/services/oplog/internal/wire"
)

// ErrMalformed is a message that is not a valid IngestRequest encoding.
var ErrMalformed = errors.New("malformed IngestRequest: not valid protobuf")

// SplitRequest returns the encoded OperationLog rows of an encoded
// IngestRequest (field 1, repeated). Other fields are skipped, as proto3
// requires of unknown fields.
func SplitRequest(msg []byte) ([][]byte, error) {
	var logs [][]byte
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, ErrMalformed
		}
		msg = msg[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(msg)
			if n < 0 {
				return nil, ErrMalformed
			}
			logs = append(logs, v)
			msg = msg[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, msg)
		if n < 0 {
			return nil, ErrMalformed
		}
		msg = msg[n:]
	}
	return logs, nil
}

// wireLog is an OperationLog as found on the wire, before validation.
type wireLog struct {
	id, userID, accountID, resourceID, errorType, errorMessage []byte
	proxyUsed, userAgent, traceID, spanID                      []byte
	operationType, outcome, authType                           int64
	errorCode, executionTimeMs, retryCount                     int64
	hasErrorCode, hasExecutionTime, sessionRefreshed           bool
	request, response, createTime                              []byte
	hasRequest, hasResponse, hasCreateTime                     bool
}

// Field numbers of platforma.oplog.v1.OperationLog.
var fieldNames = map[protowire.Number]string{
	1: "id", 2: "user_id", 3: "platform_account_id", 4: "operation_type", 5: "resource_id", 6: "outcome",
	7: "error_code", 8: "error_type", 9: "error_message", 10: "execution_time_ms", 11: "retry_count",
	12: "auth_type_detected", 13: "session_refreshed", 14: "proxy_used", 15: "user_agent",
	16: "request_payload", 17: "response_summary", 18: "trace_id", 19: "create_time",
	20: "span_id",
}

// parseLog reads the fields of one encoded OperationLog. A field repeated
// on the wire keeps its last value (for scalars, as proto3 says; for the
// message fields too, which standard encoders never repeat).
func parseLog(b []byte) (wireLog, *Rejection) {
	var l wireLog
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return l, reject("logs", "malformed protobuf")
		}
		b = b[n:]
		name, known := fieldNames[num]
		switch {
		case !known:
			n = protowire.ConsumeFieldValue(num, typ, b)
		case typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			switch num {
			case 1:
				l.id = v
			case 2:
				l.userID = v
			case 3:
				l.accountID = v
			case 5:
				l.resourceID = v
			case 8:
				l.errorType = v
			case 9:
				l.errorMessage = v
			case 14:
				l.proxyUsed = v
			case 15:
				l.userAgent = v
			case 16:
				l.request, l.hasRequest = v, true
			case 17:
				l.response, l.hasResponse = v, true
			case 18:
				l.traceID = v
			case 20:
				l.spanID = v
			case 19:
				l.createTime, l.hasCreateTime = v, true
			default:
				return l, reject(name, "wrong protobuf wire type")
			}
		case typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			switch num {
			case 4:
				l.operationType = int64(int32(v))
			case 6:
				l.outcome = int64(int32(v))
			case 7:
				l.errorCode, l.hasErrorCode = int64(int32(v)), true
			case 10:
				l.executionTimeMs, l.hasExecutionTime = int64(v), true
			case 11:
				l.retryCount = int64(int32(v))
			case 12:
				l.authType = int64(int32(v))
			case 13:
				l.sessionRefreshed = v != 0
			default:
				return l, reject(name, "wrong protobuf wire type")
			}
		default:
			return l, reject(name, "wrong protobuf wire type")
		}
		if n < 0 {
			return l, reject("logs", "malformed protobuf")
		}
		b = b[n:]
	}
	return l, nil
}

// RowID returns the id of an encoded row as sent, made printable, for
// rejection reports; "" when it has none.
func RowID(b []byte) string {
	l, _ := parseLog(b)
	return strings.ToValidUTF8(string(l.id), "\uFFFD")
}

// Convert validates one encoded OperationLog and turns it into a Row.
// now is the server's clock. The first field at fault is reported.
func (c *Converter) Convert(b []byte, now time.Time) (store.Row, *Rejection) {
	var r store.Row
	l, rej := parseLog(b)
	if rej != nil {
		return r, rej
	}
	var ok bool
	if r.ID, ok = parseUUID(l.id); !ok {
		return r, reject("id", "must be a UUID")
	}
	if r.UserID, ok = parseUUID(l.userID); !ok {
		return r, reject("user_id", "must be a UUID")
	}
	if !l.hasCreateTime {
		return r, reject("create_time", "required")
	}
	t, ok := parseTimestamp(l.createTime)
	if !ok {
		return r, reject("create_time", "not a valid timestamp")
	}
	r.CreateTime = t.Truncate(time.Microsecond)
	if r.CreateTime.Before(now.Add(-c.Window.Backfill)) {
		return r, reject("create_time", "older than the backfill window of "+c.Window.Backfill.String())
	}
	if r.CreateTime.After(now.Add(c.Window.FutureSkew)) {
		return r, reject("create_time", "more than "+c.Window.FutureSkew.String()+" in the future")
	}
	if _, ok := oplogv1.OperationType_name[int32(l.operationType)]; !ok || l.operationType == 0 {
		return r, reject("operation_type", "required, one of the OperationType values")
	}
	r.OperationType = int16(l.operationType)
	switch commonv1.Outcome(l.outcome) {
	case commonv1.Outcome_OUTCOME_SUCCESS, commonv1.Outcome_OUTCOME_FAILED:
		r.Outcome = int16(l.outcome)
	default:
		return r, reject("outcome", "required, OUTCOME_SUCCESS or OUTCOME_FAILED")
	}
	if _, ok := commonv1.AuthType_name[int32(l.authType)]; !ok {
		return r, reject("auth_type_detected", "unknown AuthType value")
	}
	r.AuthTypeDetected = int16(l.authType)
	for _, f := range []struct {
		name  string
		value []byte
		kind  validate.Kind
		dst   *[]byte
	}{
		{"platform_account_id", l.accountID, validate.Identifier, &r.PlatformAccountID},
		{"resource_id", l.resourceID, validate.Identifier, &r.ResourceID},
		{"error_type", l.errorType, validate.Code, &r.ErrorType},
		{"error_message", l.errorMessage, validate.Message, &r.ErrorMessage},
		{"proxy_used", l.proxyUsed, validate.Identifier, &r.ProxyUsed},
		{"user_agent", l.userAgent, validate.UserAgent, &r.UserAgent},
	} {
		if reason := f.kind.ProblemBytes(f.value); reason != "" {
			return r, reject(f.name, reason)
		}
		*f.dst = f.value
	}
	if l.hasErrorCode {
		code := int32(l.errorCode)
		r.ErrorCode = &code
	}
	if l.hasExecutionTime {
		if l.executionTimeMs < 0 || l.executionTimeMs > wire.MaxExecutionTimeMs {
			return r, reject("execution_time_ms", "must be between 0 and 86400000 (24 hours)")
		}
		ms := l.executionTimeMs
		r.ExecutionTimeMs = &ms
	}
	if l.retryCount < 0 || l.retryCount > wire.MaxRetryCount {
		return r, reject("retry_count", "must be between 0 and 10000")
	}
	r.RetryCount = int32(l.retryCount)
	r.SessionRefreshed = l.sessionRefreshed
	if len(l.traceID) > 0 {
		if r.TraceID, ok = traceID(l.traceID); !ok {
			return r, reject("trace_id", "must be 32 hex characters, not all zero")
		}
	}
	if len(l.spanID) > 0 {
		if r.SpanID, ok = spanID(l.spanID); !ok {
			return r, reject("span_id", "must be 16 hex characters, not all zero")
		}
		if r.TraceID == nil {
			return r, reject("span_id", "needs trace_id")
		}
	}
	var reason string
	if l.hasRequest {
		if r.RequestPayload, reason = encodePayload(l.request, c.Keys); reason != "" {
			return r, reject("request_payload", reason)
		}
	}
	if l.hasResponse {
		if r.ResponseSummary, reason = encodePayload(l.response, c.Keys); reason != "" {
			return r, reject("response_summary", reason)
		}
	}
	return r, nil
}

// parseTimestamp reads a google.protobuf.Timestamp (1: seconds, 2: nanos)
// and checks it is in the range the type allows.
func parseTimestamp(b []byte) (time.Time, bool) {
	var sec, nsec int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return time.Time{}, false
		}
		b = b[n:]
		if typ != protowire.VarintType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return time.Time{}, false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return time.Time{}, false
		}
		b = b[n:]
		switch num {
		case 1:
			sec = int64(v)
		case 2:
			nsec = int64(int32(v))
		}
	}
	// 0001-01-01 to 9999-12-31, nanos in [0, 1e9), as Timestamp defines.
	if sec < -62135596800 || sec > 253402300799 || nsec < 0 || nsec >= 1e9 {
		return time.Time{}, false
	}
	return time.Unix(sec, nsec).UTC(), true
}
