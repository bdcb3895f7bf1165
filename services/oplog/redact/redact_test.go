package redact_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/oplog/redact"
)

// vectors are shared with the SDKs in other languages: every
// implementation of the rules must pass them (see testdata/vectors.json).
type vectors struct {
	Placeholder string `json:"placeholder"`
	Keys        []struct {
		Key       string `json:"key"`
		Sensitive bool   `json:"sensitive"`
		Note      string `json:"note"`
	} `json:"keys"`
	Values []struct {
		Input  string `json:"input"`
		Output string `json:"output"`
	} `json:"values"`
	Normalize []struct {
		Key        string `json:"key"`
		Normalized string `json:"normalized"`
	} `json:"normalize"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	require.NoError(t, err)
	var v vectors
	require.NoError(t, json.Unmarshal(raw, &v))
	require.NotEmpty(t, v.Keys)
	require.NotEmpty(t, v.Values)
	return v
}

func TestVectors(t *testing.T) {
	t.Parallel()
	v := loadVectors(t)
	assert.Equal(t, redact.Placeholder, v.Placeholder)
	keys := redact.Default()
	for _, c := range v.Keys {
		assert.Equal(t, c.Sensitive, keys.Sensitive(c.Key), "key %q (%s)", c.Key, c.Note)
		assert.Equal(t, c.Sensitive, keys.SensitiveBytes([]byte(c.Key)), "key %q as bytes", c.Key)
	}
	for _, c := range v.Values {
		got := keys.RedactString(c.Input)
		assert.Equal(t, c.Output, got, "value %q", c.Input)
		assert.Equal(t, c.Output, string(keys.RedactBytes([]byte(c.Input))), "value %q as bytes", c.Input)
		assert.Equal(t, got, keys.RedactString(got), "redacting %q again changes it", got)
	}
	for _, c := range v.Normalize {
		assert.Equal(t, c.Normalized, redact.Normalize(c.Key), "normalize %q", c.Key)
	}
}

func TestConfiguredWords(t *testing.T) {
	t.Parallel()
	keys := redact.New([]string{"Shop-Secret-Hint", "", "  ", "42"})
	assert.True(t, keys.Sensitive("shop_secret_hint"))
	assert.True(t, keys.Sensitive("myShopSecretHint"))
	assert.True(t, keys.Sensitive("ＳｈｏｐＳｅｃｒｅｔＨｉｎｔ"))
	assert.False(t, keys.Sensitive("password"), "a configured list replaces the defaults")
	assert.Equal(t, "hint: shop secret hint: [REDACTED]", keys.RedactString("hint: shop secret hint: x"))
	assert.Equal(t, "password=hunter2", keys.RedactString("password=hunter2"), "names are the configured words")
	assert.Equal(t, "Bearer [REDACTED]", keys.RedactString("Bearer 0123456789abcdef"), "patterns stay on")

	none := redact.New(nil)
	assert.False(t, none.Sensitive("password"))
	assert.Equal(t, "Bearer [REDACTED]", none.RedactString("Bearer 0123456789abcdef"), "patterns stay on without words")

	long := redact.New([]string{"an_unusually_long_sensitive_word_that_is_longer_than_sixty_four_bytes_x"})
	assert.True(t, long.Sensitive("AnUnusuallyLongSensitiveWordThatIsLongerThanSixtyFourBytesX"))
	assert.False(t, long.Sensitive("UnusuallyLongSensitiveWordThatIsLongerThanSixtyFourBytesX"))
}

func TestZeroValueRedactsNothing(t *testing.T) {
	t.Parallel()
	var keys redact.Keys
	assert.False(t, keys.Sensitive("password"))
	assert.False(t, keys.SensitiveBytes([]byte("password")))
	assert.Equal(t, "Bearer 0123456789abcdef", keys.RedactString("Bearer 0123456789abcdef"))
	assert.Equal(t, "password=x", string(keys.RedactBytes([]byte("password=x"))))
}

// The SDK runs the rules on every key and string of every payload: keys
// in ASCII and strings without secrets must cost no allocation.
//
// Not parallel: AllocsPerRun counts the whole process's allocations.
func TestFastPathsDoNotAllocate(t *testing.T) {
	keys := redact.Default()
	for _, key := range []string{"password", "reviewId", "X-Auth-Token", "user_password2", "a_key_much_longer_than_any_sensitive_word_at_all"} {
		b := []byte(key)
		assert.Zero(t, testing.AllocsPerRun(100, func() { keys.Sensitive(key) }), key)
		assert.Zero(t, testing.AllocsPerRun(100, func() { keys.SensitiveBytes(b) }), key)
	}
	for _, s := range []string{
		"Thank you!", "https://shop.example/r/1?page=2&sort=new", "error: timeout after 30s", "{\"a\": 1, \"b\": [2]}",
		"password=[REDACTED]", "Authorization: [REDACTED]", "x: ok\nb=2; c=3",
	} {
		b := []byte(s)
		assert.Zero(t, testing.AllocsPerRun(100, func() { keys.RedactString(s) }), s)
		assert.Zero(t, testing.AllocsPerRun(100, func() { keys.RedactBytes(b) }), s)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() { redact.Normalize("apikey") }))
}

func TestRedactBytesReturnsItsInputWhenClean(t *testing.T) {
	t.Parallel()
	b := []byte("nothing to see")
	got := redact.Default().RedactBytes(b)
	assert.Same(t, &b[0], &got[0])
}

var sink bool

// BenchmarkSensitive: the key rule, per key, on the kinds of key a
// payload holds.
func BenchmarkSensitive(b *testing.B) {
	keys := redact.Default()
	for _, key := range []string{"reviewId", "password", "X-Auth-Token", "ｐａｓｓｗｏｒｄ"} {
		b.Run(key, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = keys.Sensitive(key)
			}
		})
	}
}

var sinkString string

// BenchmarkRedactString: the value rules, per string.
func BenchmarkRedactString(b *testing.B) {
	keys := redact.Default()
	for name, s := range map[string]string{
		"short":  "Thank you!",
		"url":    "https://shop.example/reviews/0193a0c2?page=2&sort=newest&lang=en",
		"header": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
		"text1k": string(make1k()),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				sinkString = keys.RedactString(s)
			}
		})
	}
}

func make1k() []byte {
	const line = "The parcel arrived on time, well packed: 5 stars. Seller answered in 2 hours = great!\n"
	var b []byte
	for len(b) < 1024 {
		b = append(b, line...)
	}
	return b[:1024]
}
