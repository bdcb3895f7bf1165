package lifecycle

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/oplog/internal/coldstore"
)

// An export rate caps the rows written per second, and passes every row.
func TestThrottledWriteKeepsToItsRate(t *testing.T) {
	t.Parallel()
	var n int
	write := throttled(context.Background(), 10_000, func(*coldstore.Row) error { n++; return nil })
	start := time.Now()
	for range 3000 {
		require.NoError(t, write(&coldstore.Row{}))
	}
	assert.Equal(t, 3000, n)
	// A burst of a tenth of a second's rows, then 10,000 a second: the
	// other 2,000 rows take at least 0.2 s (less would break the cap).
	assert.GreaterOrEqual(t, time.Since(start), 190*time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stopped := throttled(ctx, 1, func(*coldstore.Row) error { return nil })
	assert.Error(t, stopped(&coldstore.Row{}), "a cancelled export stops waiting")
}
