package profilesvc

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/profile/internal/store"
)

func TestJanitorPurgesExpiredEventsUntilStopped(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	insert := func(age time.Duration) {
		_, err := pool.Exec(ctx, `INSERT INTO profile.login_events (event_id, user_id, platform_account_id, recorded_at)
			VALUES (gen_random_uuid(), gen_random_uuid(), 'a', now() - $1::interval)`, age)
		require.NoError(t, err)
	}
	insert(40 * 24 * time.Hour)
	insert(time.Hour)

	cfg := Config{RefreshAfterFailures: 3, MaxEventAge: 35 * 24 * time.Hour}
	jctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		runJanitor(jctx, store.New(pool, nil), cfg.eventRetention(), 20*time.Millisecond, time.Now, quiet)
		close(done)
	}()
	count := func() (n int) {
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM profile.login_events`).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return count() == 1 }, 10*time.Second, 20*time.Millisecond, "the 40-day-old record goes")

	insert(37 * 24 * time.Hour) // arrives later: the next round takes it
	require.Eventually(t, func() bool { return count() == 1 }, 10*time.Second, 20*time.Millisecond)

	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("janitor did not stop with its context")
	}
	assert.Equal(t, 1, count(), "the recent record stays")

	// Its age is by the janitor's clock: 40 days on, it goes too.
	later, stopLater := context.WithCancel(ctx)
	go runJanitor(later, store.New(pool, nil), cfg.eventRetention(), time.Hour, func() time.Time { return time.Now().Add(40 * 24 * time.Hour) }, quiet)
	require.Eventually(t, func() bool { return count() == 0 }, 10*time.Second, 20*time.Millisecond)
	stopLater()
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	w := WatchConfig{}.withDefaults()
	watch := func(change func(*WatchConfig)) WatchConfig { c := w; change(&c); return c }
	for _, tt := range []struct {
		cfg     Config
		problem string
	}{
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour, Watch: w}, ""},
		{Config{RefreshAfterFailures: 0, MaxEventAge: time.Hour, Watch: w}, "REFRESH_AFTER_FAILURES"},
		{Config{RefreshAfterFailures: 11, MaxEventAge: time.Hour, Watch: w}, "REFRESH_AFTER_FAILURES"},
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Minute, Watch: w}, "MAX_EVENT_AGE"},
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour, Watch: watch(func(c *WatchConfig) { c.Retention = time.Minute })}, "WATCH_RETENTION"},
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour, Watch: watch(func(c *WatchConfig) { c.MaxWatchers = 0 })}, "WATCH_MAX_WATCHERS"},
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour, Watch: watch(func(c *WatchConfig) { c.IdleTimeout = -time.Second })}, "WATCH_IDLE_TIMEOUT"},
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour, Watch: watch(func(c *WatchConfig) { c.IdleTimeout = 0 })}, ""},
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour, Watch: watch(func(c *WatchConfig) { c.BookmarkInterval = time.Millisecond })}, "WATCH_BOOKMARK_INTERVAL"},
		{Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour, Watch: watch(func(c *WatchConfig) { c.PollInterval = time.Minute })}, "WATCH_POLL_INTERVAL"},
	} {
		err := tt.cfg.Validate()
		if tt.problem == "" {
			assert.NoError(t, err)
		} else {
			assert.ErrorContains(t, err, tt.problem)
		}
	}
	assert.Equal(t, 36*24*time.Hour, Config{MaxEventAge: 35 * 24 * time.Hour}.eventRetention(),
		"ids outlive the oldest occurred_at still accepted")
}
