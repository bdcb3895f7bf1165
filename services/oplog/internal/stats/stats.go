// Package stats holds the arithmetic of the roll-ups: the fixed latency
// histogram, and percentiles and rates read back from it.
package stats

import "sort"

// Buckets is the number of latency buckets: one per bound, and one beyond
// the last.
const Buckets = len(bounds) + 1

// bounds are the upper bounds (ms, exclusive) of the latency buckets; the
// last bucket has none. They are part of the stored data: changing them
// needs a migration that rebuilds the roll-ups. An array, so that nothing
// can change them at run time; BucketRange reads them.
var bounds = [...]int64{50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 30000, 60000}

// lastBucketWidth is how wide the open last bucket is taken to be when a
// percentile falls into it.
const lastBucketWidth = 60000

// Bucket is the index of the bucket holding ms.
func Bucket(ms int64) int {
	return sort.Search(len(bounds), func(i int) bool { return ms < bounds[i] })
}

// BucketRange is the [low, high) range of bucket i in ms.
func BucketRange(i int) (low, high int64) {
	if i > 0 {
		low = bounds[i-1]
	}
	if i < len(bounds) {
		return low, bounds[i]
	}
	return low, low + lastBucketWidth
}

// Percentile estimates the q-quantile (0 < q ≤ 1) of the values counted
// in hist, interpolating linearly inside the bucket the quantile falls in,
// so the estimate always lies within the bucket of the exact value. It is
// 0 for an empty histogram.
func Percentile(hist []int64, q float64) float64 {
	var total int64
	for _, n := range hist {
		total += n
	}
	if total == 0 {
		return 0
	}
	// The rank of the q-quantile among total values, 1-based, as
	// percentile_cont's interpolation point: 1 + q*(total-1).
	rank := 1 + q*float64(total-1)
	var seen int64
	for i, n := range hist {
		if n == 0 {
			continue
		}
		if float64(seen+n) >= rank {
			low, high := BucketRange(i)
			// The bucket's n values taken as spread evenly over it: the
			// k-th sits at (k - 0.5)/n of its width.
			frac := max((rank-float64(seen)-0.5)/float64(n), 0)
			return float64(low) + frac*float64(high-low)
		}
		seen += n
	}
	low, _ := BucketRange(len(hist) - 1)
	return float64(low)
}

// Add adds b into a, growing a when needed.
func Add(a, b []int64) []int64 {
	for len(a) < len(b) {
		a = append(a, 0)
	}
	for i, n := range b {
		a[i] += n
	}
	return a
}
