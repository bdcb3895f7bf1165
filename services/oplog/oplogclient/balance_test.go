package oplogclient_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/oplog"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// A target that resolves to several replicas (a headless Service, a DNS
// name with one address per replica) gets its flushes spread over all of
// them, not pinned to the first one gRPC reaches.
func TestDialSpreadsFlushesOverReplicas(t *testing.T) {
	t.Parallel()
	const service = "platforma.oplog.v1.OpLogService"
	first := apptest.Start(t, oplog.Service(), service)
	second := apptest.Run(t, oplog.Service(), first.DatabaseURL, service)

	// What DNS would answer for the name: both replicas' addresses.
	r := manual.NewBuilderWithScheme("replicas")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: first.Addr}, {Addr: second.Addr}}})
	conn, err := oplogclient.Dial("replicas:///oplog", append(first.DialOptions(),
		grpc.WithResolvers(r), grpc.WithAuthority("localhost"))...)
	require.NoError(t, err)
	defer conn.Close()
	// Small batches, so there are many flushes to spread.
	client := newClient(t, conn, oplogclient.WithFlushSize(10), oplogclient.WithLinger(time.Millisecond))
	for i := 0; i < 400; i++ {
		client.Log(context.Background(), entry())
		if i%10 == 9 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, client.Close(ctx))
	require.Equal(t, int64(400), client.Stats().Acknowledged)

	streams := func(s *apptest.Service) float64 {
		v, _ := apptest.MetricValue(apptest.Scrape(t, s.MetricsAddr),
			`grpc_server_handled_total{grpc_code="OK",grpc_method="Ingest",grpc_service="`+service+`",grpc_type="client_stream"}`)
		return v
	}
	a, b := streams(first), streams(second)
	t.Logf("Ingest streams: %v on the first replica, %v on the second", a, b)
	assert.Positive(t, a, "the first replica got flushes")
	assert.Positive(t, b, "the second replica got flushes")
	assert.InDelta(t, a, b, (a+b)/4, "round_robin takes the replicas in turn")
}
