package profilesvc

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/store"
)

func TestWatchCursorsRoundTrip(t *testing.T) {
	t.Parallel()
	for _, p := range []store.Position{{}, {Tx: 1, ID: 0}, {Tx: 1 << 40, ID: 12345}, {Tx: 1<<63 - 1, ID: 1<<63 - 1}} {
		got, err := decodeWatchCursor(encodeWatchCursor(p))
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	c := encodeWatchCursor(store.Position{Tx: 7, ID: 9})
	for _, bad := range []string{"", "x", c[:len(c)-1], "B" + c[1:], c + "AA", "AQAAAAAAAAAHgAAAAAAAAAk"} {
		_, err := decodeWatchCursor(bad)
		assert.Error(t, err, bad)
	}
}

// At shutdown, watches end at once with UNAVAILABLE, for the client to
// resume on another replica, rather than holding the shutdown until its
// timeout.
func TestWatchesEndWhenTheServerStops(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	var srv *Server
	conn := apptest.Serve(t, pool, func(r server.Registrar) error {
		var err error
		srv, err = register(r, db.Pools{Primary: pool}, Config{RefreshAfterFailures: 3, MaxEventAge: time.Hour})
		return err
	})
	client := profilev1.NewProfileServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := client.WatchProfileChanges(ctx, &profilev1.WatchProfileChangesRequest{})
	require.NoError(t, err)
	_, err = s.Recv()
	require.NoError(t, err)
	assert.Equal(t, int64(1), srv.hub.active.Load())

	stopped := time.Now()
	srv.hub.stop()
	_, err = s.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Less(t, time.Since(stopped), 2*time.Second)
	require.Eventually(t, func() bool { return srv.hub.active.Load() == 0 }, 2*time.Second, 10*time.Millisecond)

	// And new ones are refused the same way.
	s, err = client.WatchProfileChanges(ctx, &profilev1.WatchProfileChangesRequest{})
	require.NoError(t, err)
	_, err = s.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err))
}
