package apptest

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// Parallel runs op b.N times from callers goroutines (a multiple of
// GOMAXPROCS; one caller runs op in a loop). Each goroutine gets its own
// random source.
func Parallel(b *testing.B, callers int, op func(rng *rand.Rand) error) {
	b.Helper()
	procs := runtime.GOMAXPROCS(0)
	if callers < procs {
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := op(rng); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(callers / procs)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		for pb.Next() {
			if err := op(rng); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Latencies collects call latencies from concurrent callers and reports
// their percentiles as benchmark metrics.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Time runs call and records how long it took.
func (l *Latencies) Time(call func() error) error {
	start := time.Now()
	err := call()
	d := time.Since(start)
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
	return err
}

// Report adds p50-ms and p99-ms to b's output.
func (l *Latencies) Report(b *testing.B) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	at := func(q float64) float64 { return float64(l.d[int(q*float64(len(l.d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}
