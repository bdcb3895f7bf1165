package auth

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RateLimit is a token bucket: Rate calls per second on average, bursts
// of up to Burst. Zero Rate means no limit. As a flag value it reads
// "<n>/<s|m|h>[:<burst>]" ("2000/s:4000", "120/m") or "0" (off); the
// burst defaults to n, one unit's worth.
type RateLimit struct {
	Rate  float64
	Burst int
}

// ParseRateLimit parses the flag syntax of RateLimit.
func ParseRateLimit(s string) (RateLimit, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "" || s == "off" {
		return RateLimit{}, nil
	}
	spec, burstText, hasBurst := strings.Cut(s, ":")
	nText, unit, ok := strings.Cut(spec, "/")
	if !ok {
		return RateLimit{}, fmt.Errorf("%q: want <n>/<s|m|h>[:<burst>], e.g. 2000/s:4000, or 0 for no limit", s)
	}
	n, err := strconv.ParseFloat(nText, 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return RateLimit{}, fmt.Errorf("%q: the rate must be a positive number", s)
	}
	var per time.Duration
	switch unit {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		return RateLimit{}, fmt.Errorf("%q: the unit must be s, m or h", s)
	}
	r := RateLimit{Rate: n / per.Seconds(), Burst: int(math.Ceil(n))}
	if hasBurst {
		b, err := strconv.Atoi(burstText)
		if err != nil || b < 1 {
			return RateLimit{}, fmt.Errorf("%q: the burst must be a positive integer", s)
		}
		r.Burst = b
	}
	if r.Burst > 1_000_000 {
		return RateLimit{}, fmt.Errorf("%q: the burst must be at most 1000000", s)
	}
	return r, nil
}

// Off reports whether there is no limit.
func (r RateLimit) Off() bool { return r.Rate <= 0 }

func (r RateLimit) String() string {
	if r.Off() {
		return "0"
	}
	return strconv.FormatFloat(r.Rate, 'f', -1, 64) + "/s:" + strconv.Itoa(r.Burst)
}

// Set is flag.Value's.
func (r *RateLimit) Set(s string) error {
	v, err := ParseRateLimit(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// RateLimits are the limits of each caller, per method class.
type RateLimits struct {
	Write, Read, Admin RateLimit
}

// DefaultRateLimits are the flags' defaults: far above what one worker,
// relay or operator sends, low enough that one runaway or stolen identity
// cannot take a replica for itself.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		Write: RateLimit{Rate: 2000, Burst: 4000},
		Read:  RateLimit{Rate: 500, Burst: 1000},
		Admin: RateLimit{Rate: 10, Burst: 20},
	}
}

func (l RateLimits) of(c Class) RateLimit {
	switch c {
	case ClassWrite:
		return l.Write
	case ClassRead:
		return l.Read
	case ClassAdmin:
		return l.Admin
	}
	return RateLimit{}
}

const (
	limiterShards = 16
	// maxBuckets bounds the memory of the buckets (about 100 bytes each).
	maxBuckets = 100_000
	// sweepEvery: a shard drops its idle buckets at least this often.
	sweepEvery = time.Minute
)

// limiter holds one token bucket per caller and class. Memory is bounded:
// buckets that have refilled (their caller was idle long enough) carry no
// state and are dropped every minute and whenever a shard is full; a
// shard still full after that drops buckets at random.
type limiter struct {
	limits RateLimits
	now    func() time.Time
	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu        sync.Mutex
	buckets   map[bucketKey]*bucket
	lastSweep time.Time
}

type bucketKey struct {
	subject string
	class   Class
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(limits RateLimits) *limiter {
	l := &limiter{limits: limits, now: time.Now}
	for i := range l.shards {
		l.shards[i].buckets = map[bucketKey]*bucket{}
	}
	return l
}

// allow takes a token from the caller's bucket for the class; when there
// is none it reports how long until there is.
func (l *limiter) allow(subject string, class Class) (bool, time.Duration) {
	lim := l.limits.of(class)
	if lim.Off() {
		return true, 0
	}
	now := l.now()
	sh := &l.shards[shardOf(subject)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	key := bucketKey{subject, class}
	b := sh.buckets[key]
	if b == nil {
		if now.Sub(sh.lastSweep) > sweepEvery || len(sh.buckets) >= maxBuckets/limiterShards {
			l.sweep(sh, now)
		}
		b = &bucket{tokens: float64(lim.Burst), last: now}
		sh.buckets[key] = b
	} else {
		b.refill(lim, now)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / lim.Rate * float64(time.Second))
	return false, max(wait, time.Millisecond)
}

func (b *bucket) refill(lim RateLimit, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(lim.Burst), b.tokens+el.Seconds()*lim.Rate)
		b.last = now
	}
}

// sweep drops the buckets that are full again (idle callers), then, if
// the shard is still full, some at random. A dropped bucket comes back
// full: the price of the bound is that a caller among 100,000 busy ones
// may get a fresh burst.
func (l *limiter) sweep(sh *limiterShard, now time.Time) {
	sh.lastSweep = now
	for k, b := range sh.buckets {
		lim := l.limits.of(k.class)
		b.refill(lim, now)
		if b.tokens >= float64(lim.Burst) {
			delete(sh.buckets, k)
		}
	}
	// Still full: drop an eighth at random (map order), so that the next
	// new callers do not sweep again one by one.
	if limit := maxBuckets / limiterShards; len(sh.buckets) >= limit {
		for k := range sh.buckets {
			if len(sh.buckets) <= limit*7/8 {
				break
			}
			delete(sh.buckets, k)
		}
	}
}

// size is the number of buckets held, for tests.
func (l *limiter) size() int {
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += len(l.shards[i].buckets)
		l.shards[i].mu.Unlock()
	}
	return n
}

func shardOf(s string) int {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return int(h % limiterShards)
}
