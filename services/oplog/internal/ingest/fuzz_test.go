package ingest

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/redact"
)

// FuzzIngestWire: whatever bytes arrive as an IngestRequest, SplitRequest
// and Convert never panic, and every row Convert accepts can be stored
// and read back as any service would: its text fields pass their kinds'
// rules (services/kit/validate), its payloads are valid JSON within the
// limits, with neither NUL nor \u0000 (which jsonb refuses), the value of
// every sensitive key is the placeholder, and the redaction rules find
// nothing more in it (the stored payload is redacted for good).
func FuzzIngestWire(f *testing.F) {
	withPayload := goodLog()
	withPayload.TraceId, withPayload.SpanId = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	withPayload.RequestPayload = &structpb.Struct{Fields: map[string]*structpb.Value{
		"password": structpb.NewStringValue("hunter2"),
		"note":     structpb.NewStringValue("Authorization: Bearer abc"),
		"list":     structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(1), structpb.NewNullValue()}}),
	}}
	withPayload.ResponseSummary = nested(4)
	f.Add(marshal(f, &oplogv1.IngestRequest{Logs: []*oplogv1.OperationLog{goodLog(), withPayload}}))
	f.Add(marshal(f, withPayload))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x05, 1})
	keys := redact.Default()
	f.Fuzz(func(t *testing.T, msg []byte) {
		rows, err := SplitRequest(msg)
		if err != nil {
			rows = nil
		}
		// The message itself as a row too: the fuzzer reaches the row
		// decoder sooner without the envelope.
		for _, b := range append(rows, msg) {
			if id := RowID(b); !utf8.ValidString(id) {
				t.Fatalf("RowID %q is not valid UTF-8", id)
			}
			r, rej := converter.Convert(b, now)
			if rej != nil {
				if rej.Field == "" || rej.Reason == "" {
					t.Fatalf("rejection without field or reason: %+v", rej)
				}
				continue
			}
			for _, f := range []struct {
				name  string
				value []byte
				kind  validate.Kind
			}{
				{"platform_account_id", r.PlatformAccountID, validate.Identifier},
				{"resource_id", r.ResourceID, validate.Identifier},
				{"error_type", r.ErrorType, validate.Code},
				{"error_message", r.ErrorMessage, validate.Message},
				{"proxy_used", r.ProxyUsed, validate.Identifier},
				{"user_agent", r.UserAgent, validate.UserAgent},
			} {
				if p := f.kind.ProblemBytes(f.value); p != "" {
					t.Fatalf("accepted %s %q: %s", f.name, f.value, p)
				}
			}
			for _, id := range [][]byte{r.TraceID, r.SpanID} {
				if !utf8.Valid(id) || bytes.IndexByte(id, 0) >= 0 {
					t.Fatalf("accepted id %q", id)
				}
			}
			checkPayload(t, keys, "request_payload", r.RequestPayload)
			checkPayload(t, keys, "response_summary", r.ResponseSummary)
		}
	})
}

func checkPayload(t *testing.T, keys redact.Keys, field string, p []byte) {
	t.Helper()
	if p == nil {
		return
	}
	if len(p) > wire.MaxPayloadBytes || !json.Valid(p) || bytes.IndexByte(p, 0) >= 0 || bytes.Contains(p, []byte(`\u0000`)) {
		t.Fatalf("accepted %s that jsonb would refuse: %q", field, p)
	}
	var v any
	if err := json.Unmarshal(p, &v); err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	if _, ok := v.(map[string]any); !ok {
		t.Fatalf("%s is not an object: %q", field, p)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, item := range x {
				if keys.RedactString(k) != k {
					t.Fatalf("%s: key %q still holds a secret", field, k)
				}
				if keys.Sensitive(k) && item != redact.Placeholder {
					t.Fatalf("%s: sensitive key %q kept %v", field, k, item)
				}
				walk(item)
			}
		case []any:
			for _, item := range x {
				walk(item)
			}
		case string:
			if keys.RedactString(x) != x {
				t.Fatalf("%s: string %q still holds a secret", field, x)
			}
		}
	}
	walk(v)
}
