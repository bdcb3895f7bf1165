package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/metrics"
)

func TestEnumLabel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   protoreflect.Enum
		want string
	}{
		{oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, "GET_REVIEWS"},
		{commonv1.Outcome_OUTCOME_FAILED, "FAILED"},
		{commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, "TWO_FACTOR"},
		{commonv1.AuthType_AUTH_TYPE_UNSPECIFIED, "UNSPECIFIED"},
		{profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, "CRITICAL"},
		{oplogv1.OperationType(999), "999"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, metrics.EnumLabel(tt.in))
	}
}

func TestCapFoldsValuesBeyondTheLimit(t *testing.T) {
	t.Parallel()
	c := metrics.NewCap(2)
	assert.Equal(t, "proxy-a", c.Value("proxy-a"))
	assert.Equal(t, "", c.Value(""), "no value is not a value")
	assert.Equal(t, "proxy-b", c.Value("proxy-b"))
	assert.Equal(t, metrics.Other, c.Value("proxy-c"))
	assert.Equal(t, "proxy-a", c.Value("proxy-a"), "kept values stay")
	assert.Equal(t, metrics.Other, c.Value("proxy-d"))
}

func TestCapIsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	c := metrics.NewCap(50)
	var wg sync.WaitGroup
	var mu sync.Mutex
	kept := map[string]bool{}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				v := c.Value(fmt.Sprintf("v%d", (i*7+g)%200))
				mu.Lock()
				kept[v] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Len(t, kept, 51, "50 values and other, however the goroutines interleave")
	assert.True(t, kept[metrics.Other])
}

func TestPolledReadsAtMostOncePerIntervalAndHidesFailures(t *testing.T) {
	t.Parallel()
	desc := prometheus.NewDesc("platforma_test_things", "Things.", []string{"kind"}, nil)
	reads := 0
	p := metrics.NewPolled(1<<62, slog.New(slog.NewTextHandler(io.Discard, nil)), func(context.Context) ([]metrics.Sample, error) {
		reads++
		return []metrics.Sample{{Desc: desc, LabelValues: []string{"a"}, Value: 2}, {Desc: desc, LabelValues: []string{"b"}, Value: 0}}, nil
	}, desc)
	want := `
# HELP platforma_test_things Things.
# TYPE platforma_test_things gauge
platforma_test_things{kind="a"} 2
platforma_test_things{kind="b"} 0
`
	require.NoError(t, testutil.CollectAndCompare(p, strings.NewReader(want)))
	require.NoError(t, testutil.CollectAndCompare(p, strings.NewReader(want)))
	assert.Equal(t, 1, reads, "the second scrape within the interval reuses the first read")

	fresh := metrics.NewPolled(0, slog.New(slog.NewTextHandler(io.Discard, nil)), func(context.Context) ([]metrics.Sample, error) {
		return nil, errors.New("database down")
	}, desc)
	assert.Equal(t, 0, testutil.CollectAndCount(fresh), "a failed read exports nothing rather than a stale value")
}
