package store

import "time"

// Row is one validated, redacted row ready for COPY. Its byte fields
// point into the received message, which they keep alive until the row is
// written.
type Row struct {
	ID                [16]byte
	CreateTime        time.Time // truncated to microseconds, as Postgres stores it
	UserID            [16]byte
	PlatformAccountID []byte
	OperationType     int16
	ResourceID        []byte
	Outcome           int16
	ErrorCode         *int32
	ErrorType         []byte
	ErrorMessage      []byte
	ExecutionTimeMs   *int64
	RetryCount        int32
	AuthTypeDetected  int16
	SessionRefreshed  bool
	ProxyUsed         []byte
	UserAgent         []byte
	RequestPayload    []byte // JSON, nil for none
	ResponseSummary   []byte
	TraceID           []byte
	SpanID            []byte
}

// Key is a row's identity: two rows with the same key are the same log.
type Key struct {
	ID   [16]byte
	Time int64 // create_time in Unix microseconds
}

// Key returns the row's identity.
func (r *Row) Key() Key { return Key{ID: r.ID, Time: r.CreateTime.UnixMicro()} }

// Size estimates the memory a row holds, for the writer's buffer budget.
func (r *Row) Size() int64 {
	return int64(256 + len(r.PlatformAccountID) + len(r.ResourceID) + len(r.ErrorType) + len(r.ErrorMessage) +
		len(r.ProxyUsed) + len(r.UserAgent) + len(r.RequestPayload) + len(r.ResponseSummary) + len(r.TraceID) + len(r.SpanID))
}
