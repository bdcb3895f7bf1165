package oplogclient_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/oplog"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// A worker connects with its certificate from files; an operator's tool
// with a bearer token; the token is never sent without TLS.
func TestTLSFromFilesAndBearerToken(t *testing.T) {
	t.Parallel()
	op := apptest.Start(t, oplog.Service(), oplogv1.OpLogService_ServiceDesc.ServiceName)
	p := apptest.PKI(t)
	dir := t.TempDir()
	ca, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "worker.pem"), filepath.Join(dir, "worker-key.pem")
	require.NoError(t, devpki.WriteFile(ca, p.CAPEM))
	worker, err := p.ClientCert(auth.SPIFFEID("worker", "scraper-1"))
	require.NoError(t, err)
	require.NoError(t, devpki.WriteKeyPair(certFile, keyFile, worker))

	creds, err := oplogclient.TLSFromFiles(ca, certFile, keyFile)
	require.NoError(t, err)
	conn, err := oplogclient.Dial(op.Addr, creds)
	require.NoError(t, err)
	defer conn.Close()
	client := newClient(t, conn)
	for i := 0; i < 10; i++ {
		client.Log(context.Background(), entry())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, client.Close(ctx))
	assert.Equal(t, int64(10), client.Stats().Acknowledged)

	// The operator: TLS without a certificate, a token with every call.
	serverOnly, err := oplogclient.TLSFromFiles(ca, "", "")
	require.NoError(t, err)
	opConn, err := grpc.NewClient(op.Addr, serverOnly, oplogclient.BearerToken(apptest.Token(t, "olga", auth.Operator)))
	require.NoError(t, err)
	defer opConn.Close()
	resp, err := oplogv1.NewOpLogServiceClient(opConn).ListOperationLogs(context.Background(), &oplogv1.ListOperationLogsRequest{})
	require.NoError(t, err)
	assert.Len(t, resp.GetOperationLogs(), 10)

	// Without a certificate or token: refused.
	anonymous, err := grpc.NewClient(op.Addr, serverOnly)
	require.NoError(t, err)
	defer anonymous.Close()
	_, err = oplogv1.NewOpLogServiceClient(anonymous).ListOperationLogs(context.Background(), &oplogv1.ListOperationLogsRequest{})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))

	// Over plaintext, gRPC refuses to send the token at all.
	_, err = grpc.NewClient(op.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), oplogclient.BearerToken("secret"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "transport level security")

	_, err = oplogclient.TLSFromFiles(ca, certFile, "")
	assert.Error(t, err, "a certificate needs its key")
}
