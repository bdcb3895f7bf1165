package server_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/server"
)

func TestEveryRunsAtOnceThenEachIntervalUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var rounds atomic.Int64
	done := make(chan struct{})
	go func() {
		server.Every(ctx, time.Hour, func(context.Context) { rounds.Add(1) })
		close(done)
	}()
	require.Eventually(t, func() bool { return rounds.Load() == 1 }, 5*time.Second, time.Millisecond, "the first round does not wait for the interval")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return when its context ended")
	}
	assert.Equal(t, int64(1), rounds.Load())

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var fast atomic.Int64
	go server.Every(ctx, 5*time.Millisecond, func(context.Context) { fast.Add(1) })
	require.Eventually(t, func() bool { return fast.Load() >= 3 }, 5*time.Second, time.Millisecond, "then a round every interval")
}
