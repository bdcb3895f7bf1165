package oplogprom_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/oplogclient"
	"github.com/platforma/platforma/services/oplog/oplogclient/oplogprom"
)

// The client's counters and the spool's state reach Prometheus, named,
// with the caller's labels.
func TestCollectorExportsStats(t *testing.T) {
	t.Parallel()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client, err := oplogclient.New(conn, oplogclient.WithSpool(t.TempDir(), 8<<20), oplogclient.WithLinger(time.Millisecond))
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		client.Log(context.Background(), oplogclient.Entry{UserID: "0193a0c2-0000-7000-8000-0000000000aa",
			OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, Outcome: commonv1.Outcome_OUTCOME_SUCCESS})
	}
	// Nothing listens: the entries end up in the spool.
	require.Eventually(t, func() bool { return client.Stats().SpoolEntries == 3 }, 10*time.Second, 10*time.Millisecond)

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(oplogprom.NewCollector(client, prometheus.Labels{"worker": "w1"})))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP oplogclient_enqueued_total Entries accepted by Log.
# TYPE oplogclient_enqueued_total counter
oplogclient_enqueued_total{worker="w1"} 3
# HELP oplogclient_spool_entries Entries in the spool waiting for delivery.
# TYPE oplogclient_spool_entries gauge
oplogclient_spool_entries{worker="w1"} 3
# HELP oplogclient_spooled_total Entries written to the disk spool.
# TYPE oplogclient_spooled_total counter
oplogclient_spooled_total{worker="w1"} 3
`), "oplogclient_enqueued_total", "oplogclient_spool_entries", "oplogclient_spooled_total"))
	n, err := testutil.GatherAndCount(reg)
	require.NoError(t, err)
	require.Equal(t, 15, n, "every Stats field is exported")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = client.Close(ctx)
}
