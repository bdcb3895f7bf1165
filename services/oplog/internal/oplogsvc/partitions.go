package oplogsvc

import (
	"context"
	"log/slog"
	"time"

	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// maintainPartitions creates the partitions of the accepted window and of
// the next month, now and every interval, so the write path rarely has to.
func maintainPartitions(ctx context.Context, parts *store.Partitions, backfill, interval time.Duration, clock func() time.Time, log *slog.Logger) {
	server.Every(ctx, interval, func(ctx context.Context) {
		now := clock()
		err := parts.EnsureRange(ctx, now.Add(-backfill), now.AddDate(0, 1, 0))
		if err != nil && ctx.Err() == nil {
			log.Warn("creating partitions failed; retrying next round (the write path also creates missing ones)", "error", err)
		}
	})
}
