// Package metrics holds what the services' domain metrics share: label
// values from proto enums, a bound on label cardinality, and gauges read
// from the database at scrape time.
package metrics

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Namespace prefixes every platforma metric.
const Namespace = "platforma"

// EnumLabel is an enum value's name without its type prefix, the form
// operators know from their dashboards: OPERATION_TYPE_GET_REVIEWS
// becomes GET_REVIEWS. Unknown numbers become their decimal text.
func EnumLabel(v protoreflect.Enum) string {
	d := v.Descriptor().Values().ByNumber(v.Number())
	if d == nil {
		return strconv.Itoa(int(v.Number()))
	}
	return strings.TrimPrefix(string(d.Name()), enumPrefix(string(v.Descriptor().Name())))
}

// enumPrefix is the UPPER_SNAKE_CASE prefix buf's lint requires of an
// enum's values: StabilityGrade → STABILITY_GRADE_.
func enumPrefix(typeName string) string {
	var b strings.Builder
	for i, r := range typeName {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	b.WriteByte('_')
	return b.String()
}

// Other is the label value that stands for every value beyond a Cap.
const Other = "other"

// Cap bounds the distinct values of a label that clients choose (proxy
// names, error types): the first Max values seen are kept, later new ones
// are folded into Other, so a client cannot grow Prometheus' memory
// without bound. The set is per process; replicas may fold differently.
type Cap struct {
	max  int
	mu   sync.RWMutex
	seen map[string]struct{}
}

// NewCap returns a cap of max distinct values (0 folds everything).
func NewCap(max int) *Cap { return &Cap{max: max, seen: make(map[string]struct{})} }

// Value returns v if it is among the kept values, or can join them, else
// Other. The empty string (no value) is always kept and not counted.
func (c *Cap) Value(v string) string {
	if v == "" {
		return v
	}
	c.mu.RLock()
	_, ok := c.seen[v]
	full := len(c.seen) >= c.max
	c.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return Other
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if len(c.seen) >= c.max {
		return Other
	}
	// Label values keep their own copy: v may point into a request buffer.
	c.seen[strings.Clone(v)] = struct{}{}
	return v
}

// Sample is one value of a polled gauge.
type Sample struct {
	Desc        *prometheus.Desc
	LabelValues []string
	Value       float64
}

// Polled are gauges whose values are read together (usually by one
// database query) when Prometheus scrapes, at most once per minInterval:
// scrapes from several Prometheus servers share one read. When the read
// fails the gauges are left out of that scrape, rather than shown with
// stale values, and the failure is logged.
type Polled struct {
	descs       []*prometheus.Desc
	read        func(ctx context.Context) ([]Sample, error)
	minInterval time.Duration
	timeout     time.Duration
	log         *slog.Logger

	mu      sync.Mutex
	last    []Sample
	readAt  time.Time
	lastErr bool
}

// NewPolled returns gauges described by descs whose samples read returns;
// read gets a context bounded by 5s.
func NewPolled(minInterval time.Duration, log *slog.Logger, read func(ctx context.Context) ([]Sample, error), descs ...*prometheus.Desc) *Polled {
	return &Polled{descs: descs, read: read, minInterval: minInterval, timeout: 5 * time.Second, log: log}
}

// Describe implements prometheus.Collector.
func (p *Polled) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range p.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Polled) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	if p.last == nil || time.Since(p.readAt) >= p.minInterval {
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		samples, err := p.read(ctx)
		cancel()
		if err != nil {
			if !p.lastErr {
				p.log.Warn("reading gauges failed; left out until it succeeds", "gauge", p.descs[0].String(), "error", err)
			}
			p.last, p.lastErr = nil, true
		} else {
			p.last, p.readAt, p.lastErr = samples, time.Now(), false
		}
	}
	samples := p.last
	p.mu.Unlock()
	for _, s := range samples {
		ch <- prometheus.MustNewConstMetric(s.Desc, prometheus.GaugeValue, s.Value, s.LabelValues...)
	}
}
