package wire

// Limits of Ingest, in one place for both ends: the server refuses what
// exceeds them, and the SDK keeps within them, so that only other clients
// ever meet them as refusals.
const (
	// MaxRowsPerMessage bounds one IngestRequest.
	MaxRowsPerMessage = 1000
	// MaxRowsPerStream bounds one stream (and so its response).
	MaxRowsPerStream = 10000
	// MaxPayloadBytes bounds each of request_payload and response_summary,
	// measured as JSON.
	MaxPayloadBytes = 16 << 10
	// MaxPayloadDepth bounds how deeply a payload nests.
	MaxPayloadDepth = 16
	// MaxExecutionTimeMs is the longest execution_time_ms: a day.
	MaxExecutionTimeMs = 24 * 60 * 60 * 1000
	// MaxRetryCount is the largest retry_count.
	MaxRetryCount = 10000
)
