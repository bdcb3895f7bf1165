package validate_test

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/validate"
)

var kinds = map[string]validate.Kind{
	"identifier": validate.Identifier,
	"code":       validate.Code,
	"message":    validate.Message,
	"user_agent": validate.UserAgent,
}

type vectors struct {
	Kinds map[string]int `json:"kinds"`
	Cases []struct {
		Kind      string `json:"kind"`
		Input     string `json:"input"`
		InputHex  string `json:"input_hex"`
		Problem   string `json:"problem"`
		Sanitized string `json:"sanitized"`
	} `json:"cases"`
}

// The vectors are shared with the SDKs: every implementation of the rule
// gives the same answers.
func TestTextKindsAgainstSharedVectors(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/text_kinds.json")
	require.NoError(t, err)
	var vs vectors
	require.NoError(t, json.Unmarshal(raw, &vs))
	require.Len(t, vs.Kinds, len(kinds))
	for name, max := range vs.Kinds {
		require.Contains(t, kinds, name)
		assert.Equal(t, max, kinds[name].MaxBytes(), name)
	}
	require.NotEmpty(t, vs.Cases)
	for _, c := range vs.Cases {
		k, ok := kinds[c.Kind]
		require.True(t, ok, c.Kind)
		in := c.Input
		if c.InputHex != "" {
			b, err := hex.DecodeString(c.InputHex)
			require.NoError(t, err)
			in = string(b)
		}
		p := k.Problem(in)
		if c.Problem == "" {
			assert.Empty(t, p, "%s %q", c.Kind, in)
		} else {
			assert.Contains(t, p, c.Problem, "%s %q", c.Kind, in)
		}
		assert.Equal(t, p, k.ProblemBytes([]byte(in)), "bytes and string forms agree on %q", in)
		assert.Equal(t, c.Sanitized, k.Sanitize(in), "%s %q", c.Kind, in)
	}
}

func TestCheckAndRequire(t *testing.T) {
	t.Parallel()
	var v apierr.Violations
	assert.True(t, validate.Identifier.Check(&v, "optional", ""))
	assert.False(t, validate.Identifier.Require(&v, "missing", ""))
	assert.False(t, validate.Identifier.Require(&v, "padded", " a"))
	assert.True(t, validate.Identifier.Require(&v, "fine", "a"))
	assert.Equal(t, "required", violation(&v, "missing"))
	assert.Equal(t, "must not start or end with whitespace", violation(&v, "padded"))
	assert.Len(t, v.List(), 2)
}

// Whatever an SDK sanitises, every service accepts.
func FuzzSanitizedIsAccepted(f *testing.F) {
	for _, s := range []string{"", " a ", "a\x00b", "\xff", "\u00a0", strings.Repeat("가", 100), "a\n\tb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, k := range kinds {
			got := k.Sanitize(s)
			if p := k.Problem(got); p != "" {
				t.Fatalf("%s: Sanitize(%q) = %q, refused: %s", name, s, got, p)
			}
			if k.Problem(s) == "" && got != s {
				t.Fatalf("%s: a valid %q was changed to %q", name, s, got)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("%s: invalid UTF-8 out of Sanitize", name)
			}
		}
	})
}
