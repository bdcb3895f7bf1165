package profilesvc

import (
	"context"
	"log/slog"
	"time"

	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/store"
)

// runJanitor deletes idempotency records older than retention by clock,
// now and then every interval, until ctx ends. Replicas take turns through
// an advisory lock in the store.
func runJanitor(ctx context.Context, st *store.Store, retention, interval time.Duration, clock func() time.Time, log *slog.Logger) {
	server.Every(ctx, interval, func(ctx context.Context) {
		n, err := st.PurgeEvents(ctx, clock().Add(-retention), 10000)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			log.Warn("purging old login events failed; retrying next round", "error", err)
		case n > 0:
			log.Info("purged old login events", "deleted", n, "retention", retention.String())
		}
	})
}
