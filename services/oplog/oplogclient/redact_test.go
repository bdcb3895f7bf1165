package oplogclient

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/oplog/redact"
)

// redactVectors are the shared test vectors of package redact: the SDK
// must send what they say, as the server must store it.
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

func TestSDKAppliesTheSharedVectors(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../redact/testdata/vectors.json")
	require.NoError(t, err)
	var v redactVectors
	require.NoError(t, json.Unmarshal(raw, &v))
	require.NotEmpty(t, v.Keys)
	keys := redact.Default()
	const canary = "hunter2-canary"
	for _, c := range v.Keys {
		got := decodeStruct(t, encodePayload(map[string]any{c.Key: canary}, keys))
		want := canary
		if c.Sensitive {
			want = redact.Placeholder
		}
		assert.Equal(t, map[string]any{c.Key: want}, got, "key %q", c.Key)
	}
	for _, c := range v.Values {
		got := decodeStruct(t, encodePayload(map[string]any{
			"v": c.Input, "list": []string{c.Input}, "err": errors.New(c.Input),
		}, keys))
		assert.Equal(t, c.Output, got["v"], "value %q", c.Input)
		assert.Equal(t, []any{c.Output}, got["list"], "value %q in a list", c.Input)
		assert.Equal(t, c.Output, got["err"], "value %q as an error", c.Input)
	}
}

// The leaks of the security issue: none reaches the wire.
func TestSDKIssueLeaksAreClosed(t *testing.T) {
	t.Parallel()
	const canary = "cAnArY-4f1d9b2e77"
	b := encodePayload(map[string]any{
		"secretAccessKey":  canary,
		"jwt":              canary,
		"bearer":           canary,
		"password:":        canary,
		"pass\u200bword":   canary,
		"ｐａｓｓｗｏｒｄ":         canary,
		"note":             "Authorization: Bearer " + canary,
		"headers":          map[string]string{"X-Forwarded": "Authorization=Bearer " + canary},
		"Bearer " + canary: 1,
		"shopId":           "shop-1",
	}, redact.Default())
	assert.NotContains(t, string(b), canary)
	got := decodeStruct(t, b)
	assert.Equal(t, "shop-1", got["shopId"])
	assert.Equal(t, "Authorization: [REDACTED]", got["note"])
	assert.Equal(t, 1.0, got["Bearer [REDACTED]"])
}
