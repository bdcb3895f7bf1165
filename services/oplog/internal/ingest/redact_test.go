package ingest

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/platforma/platforma/services/oplog/redact"
)

// redactVectors are the shared test vectors of package redact: the server
// must store what they say, as the SDK must send it.
type redactVectors struct {
	Keys []struct {
		Key       string `json:"key"`
		Sensitive bool   `json:"sensitive"`
	} `json:"keys"`
	Values []struct {
		Input  string `json:"input"`
		Output string `json:"output"`
	} `json:"values"`
}

func loadRedactVectors(t *testing.T) redactVectors {
	t.Helper()
	raw, err := os.ReadFile("../../redact/testdata/vectors.json")
	require.NoError(t, err)
	var v redactVectors
	require.NoError(t, json.Unmarshal(raw, &v))
	require.NotEmpty(t, v.Keys)
	return v
}

// storedPayload converts a row with payload as its request_payload and
// returns what would be stored, decoded.
func storedPayload(t *testing.T, payload map[string]any) (map[string]any, string) {
	t.Helper()
	s, err := structpb.NewStruct(payload)
	require.NoError(t, err)
	l := goodLog()
	l.RequestPayload = s
	r, rej := converter.Convert(marshal(t, l), now)
	require.Nil(t, rej)
	var got map[string]any
	require.NoError(t, json.Unmarshal(r.RequestPayload, &got), string(r.RequestPayload))
	return got, string(r.RequestPayload)
}

func TestServerAppliesTheSharedVectors(t *testing.T) {
	t.Parallel()
	v := loadRedactVectors(t)
	const canary = "hunter2-canary"
	for _, c := range v.Keys {
		got, _ := storedPayload(t, map[string]any{c.Key: canary})
		want := canary
		if c.Sensitive {
			want = redact.Placeholder
		}
		// The key's own text goes through the value rules: none of the
		// key vectors holds a secret, so each key is stored as it is.
		assert.Equal(t, map[string]any{c.Key: want}, got, "key %q", c.Key)
	}
	for _, c := range v.Values {
		got, _ := storedPayload(t, map[string]any{"v": c.Input, "nested": []any{map[string]any{"w": c.Input}}})
		assert.Equal(t, c.Output, got["v"], "value %q", c.Input)
		assert.Equal(t, c.Output, got["nested"].([]any)[0].(map[string]any)["w"], "value %q nested", c.Input)
	}
}

// The leaks of the security issue: each put the canary into storage.
func TestIssueLeaksAreClosed(t *testing.T) {
	t.Parallel()
	const canary = "cAnArY-4f1d9b2e77"
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0." + canary
	got, raw := storedPayload(t, map[string]any{
		"secretAccessKey":  canary,
		"jwt":              canary,
		"bearer":           canary,
		"password:":        canary,
		"pass\u200bword":   canary,
		"ｐａｓｓｗｏｒｄ":         canary,
		"note":             "Authorization: Bearer " + canary,
		"headers":          []any{[]any{"Authorization", "Bearer " + canary}},
		"url":              "https://shop.example/login?user=owner&password=" + canary + "&x=1",
		"token_in_a_list":  []any{jwt},
		"credentials":      map[string]any{"inner": canary},
		"Bearer " + canary: "a secret as a key",
		"shopId":           "shop-1",
	})
	assert.NotContains(t, raw, canary)
	assert.Equal(t, "shop-1", got["shopId"])
	assert.Equal(t, "Authorization: [REDACTED]", got["note"])
	assert.Equal(t, []any{[]any{"Authorization", "Bearer [REDACTED]"}}, got["headers"])
	assert.Equal(t, "https://shop.example/login?user=owner&password=[REDACTED]&x=1", got["url"])
	assert.Equal(t, "a secret as a key", got["Bearer [REDACTED]"])
}

// The server redacts again what the SDK redacted: that changes nothing.
func TestRedactedPayloadIsStoredUnchanged(t *testing.T) {
	t.Parallel()
	in := map[string]any{
		"password": redact.Placeholder,
		"url":      "https://x/?token=[REDACTED]&a=1",
		"header":   "Authorization: [REDACTED]",
		"conn":     "postgres://app:[REDACTED]@db/x",
	}
	got, _ := storedPayload(t, in)
	assert.Equal(t, in, got)
}

func BenchmarkEncodePayload(b *testing.B) {
	s, err := structpb.NewStruct(map[string]any{
		"reviewId": "r-1", "text": "Thank you! " + strings.Repeat("Great seller. ", 10), "password": "x",
		"request": map[string]any{"url": "https://shop.example/reviews/1?page=2&sort=new", "status": 200.0},
	})
	require.NoError(b, err)
	raw := marshal(b, s)
	keys := redact.Default()
	b.ReportAllocs()
	for b.Loop() {
		encodePayload(raw, keys)
	}
}
