package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// No migrations in the template: the test runs the binary's own migrate.
func TestMain(m *testing.M) { pgtest.Main(m) }

func TestBinaryMigratesAndIngests(t *testing.T) {
	grpcService := oplogv1.OpLogService_ServiceDesc.ServiceName
	s := apptest.Start(t, service, grpcService)
	assert.Contains(t, apptest.ListServices(t, s.Conn), grpcService, "reflection lists the service")
	ctx := context.Background()

	// A plain generated client, as grpcurl or another language would send.
	stream, err := oplogv1.NewOpLogServiceClient(s.Conn).Ingest(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&oplogv1.IngestRequest{Logs: []*oplogv1.OperationLog{{
		Id: uuid.NewString(), UserId: uuid.NewString(), OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_STORES,
		Outcome: commonv1.Outcome_OUTCOME_SUCCESS, CreateTime: timestamppb.Now(),
	}, {Id: "bad"}}}))
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	assert.Equal(t, int64(1), resp.GetAccepted())
	require.Len(t, resp.GetRejected(), 1)
	assert.Equal(t, int64(1), resp.GetRejected()[0].GetIndex())

	// The SDK, as a worker uses it.
	client, err := oplogclient.New(s.Conn)
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		client.Log(ctx, oplogclient.Entry{UserID: uuid.NewString(), OperationType: oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN, Outcome: commonv1.Outcome_OUTCOME_FAILED})
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, client.Close(closeCtx))
	assert.Equal(t, int64(10), client.Stats().Acknowledged)

	// What was ingested can be queried.
	list, err := oplogv1.NewOpLogServiceClient(s.Conn).ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{
		Outcome: commonv1.Outcome_OUTCOME_FAILED, PageSize: 100,
	})
	require.NoError(t, err)
	assert.Len(t, list.GetOperationLogs(), 10)
	st, err := oplogv1.NewOpLogServiceClient(s.Conn).GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{
		Since: timestamppb.New(time.Now().Add(-time.Hour)), Until: timestamppb.Now(),
	})
	require.NoError(t, err)
	require.Len(t, st.GetStats(), 2)
	assert.Equal(t, int64(10), st.GetStats()[0].GetTotal(), "CHECK_LOGIN comes first")
}
