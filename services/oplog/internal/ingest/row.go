// Package ingest turns Ingest rows into database rows and writes them:
// per-row validation and redaction (row.go, payload.go) and the
// group-commit writer (writer.go), which has the store create a missing
// monthly partition before it writes into it.
package ingest

import (
	"bytes"
	"encoding/hex"
	"time"

	"github.com/google/uuid"

	"github.com/platforma/platforma/services/oplog/redact"
)

// Window is the range of create_time accepted at a given moment.
type Window struct {
	// Backfill is how old a row may be.
	Backfill time.Duration
	// FutureSkew is how far ahead of the server's clock a row may be.
	FutureSkew time.Duration
}

// Rejection says why a row was refused: the first field found at fault.
type Rejection struct {
	Field  string
	Reason string
}

// Converter validates and redacts rows.
type Converter struct {
	Window Window
	Keys   redact.Keys
}

func reject(field, reason string) *Rejection { return &Rejection{Field: field, Reason: reason} }

// parseUUID accepts the canonical 36-character form only.
func parseUUID(b []byte) ([16]byte, bool) {
	if len(b) != 36 {
		return [16]byte{}, false
	}
	id, err := uuid.ParseBytes(b)
	return id, err == nil
}

// traceID returns b in lower case when it is 32 hex digits, not all zero.
func traceID(b []byte) ([]byte, bool) { return hexID(b, 16) }

// spanID returns b in lower case when it is 16 hex digits, not all zero.
func spanID(b []byte) ([]byte, bool) { return hexID(b, 8) }

// hexID returns b in lower case when it is the hex form of a non-zero id
// of n bytes.
func hexID(b []byte, n int) ([]byte, bool) {
	if len(b) != 2*n {
		return nil, false
	}
	var raw [16]byte
	if _, err := hex.Decode(raw[:n], b); err != nil || raw == ([16]byte{}) {
		return nil, false
	}
	return bytes.ToLower(b), true
}
