package stats_test

import (
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/platforma/platforma/services/oplog/internal/stats"
)

func TestBucket(t *testing.T) {
	t.Parallel()
	for ms, want := range map[int64]int{0: 0, 49: 0, 50: 1, 99: 1, 100: 2, 999: 6, 1000: 7, 59999: 16, 60000: 17, 1 << 40: 17} {
		assert.Equal(t, want, stats.Bucket(ms), "%d ms", ms)
		low, high := stats.BucketRange(want)
		assert.True(t, ms >= low && (ms < high || want == stats.Buckets-1), "%d in [%d, %d)", ms, low, high)
	}
	assert.Equal(t, 18, stats.Buckets)
}

// exact is percentile_cont over sorted values: linear interpolation
// between the values around rank 1 + q*(n-1).
func exact(sorted []int64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	lo := int(pos)
	if lo+1 >= len(sorted) {
		return float64(sorted[lo])
	}
	return float64(sorted[lo]) + (pos-float64(lo))*float64(sorted[lo+1]-sorted[lo])
}

func TestPercentileFallsInTheBucketOfTheExactValue(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(9, 9))
	for round := 0; round < 200; round++ {
		n := 1 + rng.IntN(2000)
		values := make([]int64, n)
		hist := make([]int64, stats.Buckets)
		for i := range values {
			// Mostly fast, a long tail: what browser operations look like.
			v := int64(rng.ExpFloat64() * float64(200+rng.IntN(3000)))
			values[i] = v
			hist[stats.Bucket(v)]++
		}
		sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
		for _, q := range []float64{0.5, 0.95, 0.99} {
			want, got := exact(values, q), stats.Percentile(hist, q)
			// Within one bucket: the estimate's bucket is the exact value's
			// bucket or a neighbour (the exact value may interpolate
			// across a bound).
			diff := stats.Bucket(int64(got)) - stats.Bucket(int64(want))
			assert.True(t, diff >= -1 && diff <= 1, "q=%v exact %.1f estimate %.1f", q, want, got)
		}
	}
	assert.Zero(t, stats.Percentile(make([]int64, stats.Buckets), 0.5))
	one := make([]int64, stats.Buckets)
	one[stats.Bucket(120)] = 1
	assert.Equal(t, 150.0, stats.Percentile(one, 0.99), "a single value: the middle of its bucket")
}

func TestAdd(t *testing.T) {
	t.Parallel()
	assert.Equal(t, []int64{2, 4, 3}, stats.Add([]int64{1, 2}, []int64{1, 2, 3}))
}
