package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRateLimit(t *testing.T) {
	t.Parallel()
	ok := map[string]RateLimit{
		"0":           {},
		"off":         {},
		"2000/s":      {Rate: 2000, Burst: 2000},
		"2000/s:4000": {Rate: 2000, Burst: 4000},
		"120/m":       {Rate: 2, Burst: 120},
		"3600/h:10":   {Rate: 1, Burst: 10},
		"0.5/s":       {Rate: 0.5, Burst: 1},
	}
	for in, want := range ok {
		got, err := ParseRateLimit(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"2000", "2000/d", "-1/s", "x/s", "10/s:0", "10/s:x", "10/s:2000000"} {
		_, err := ParseRateLimit(bad)
		assert.Error(t, err, bad)
	}
	assert.Equal(t, "2000/s:4000", RateLimit{Rate: 2000, Burst: 4000}.String())
	assert.Equal(t, "0", RateLimit{}.String())
}

func TestTokenBucketPerCallerAndClass(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	l := newLimiter(RateLimits{Write: RateLimit{Rate: 10, Burst: 3}, Read: RateLimit{Rate: 1, Burst: 1}})
	l.now = func() time.Time { return now }

	for i := 0; i < 3; i++ {
		ok, _ := l.allow("w1", ClassWrite)
		require.True(t, ok, "the burst")
	}
	ok, wait := l.allow("w1", ClassWrite)
	assert.False(t, ok)
	assert.Equal(t, 100*time.Millisecond, wait, "one token every 100 ms")
	ok, _ = l.allow("w2", ClassWrite)
	assert.True(t, ok, "another caller has its own bucket")
	ok, _ = l.allow("w1", ClassRead)
	assert.True(t, ok, "another class has its own bucket")
	ok, _ = l.allow("w1", ClassAdmin)
	assert.True(t, ok, "a class without a limit")

	now = now.Add(100 * time.Millisecond)
	ok, _ = l.allow("w1", ClassWrite)
	assert.True(t, ok, "refilled")
	ok, _ = l.allow("w1", ClassWrite)
	assert.False(t, ok)
}

// Memory stays bounded however many identities call: idle callers'
// buckets are dropped, and a full table drops some.
func TestLimiterMemoryIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	l := newLimiter(RateLimits{Read: RateLimit{Rate: 100, Burst: 100}})
	l.now = func() time.Time { return now }
	for i := 0; i < 2*maxBuckets; i++ {
		l.allow(fmt.Sprintf("caller-%d", i), ClassRead)
	}
	assert.LessOrEqual(t, l.size(), maxBuckets)

	// A minute later every bucket has refilled: the next sweep of each
	// shard drops them all.
	now = now.Add(2 * sweepEvery)
	for i := 0; i < 10*limiterShards; i++ {
		l.allow(fmt.Sprintf("late-%d", i), ClassRead)
	}
	assert.Less(t, l.size(), 20*limiterShards, "idle callers were evicted")
}
