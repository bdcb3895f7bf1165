package server_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/server"
)

// A truncated varint: field 1 (varint) of grpc.testing.SimpleRequest
// whose value never ends.
var malformed = []byte{0x08, 0xff}

// Bytes that are not protobuf are the client's mistake: INVALID_ARGUMENT
// naming the message type, logged at INFO and counted like any refusal,
// and the handler never runs.
func TestMalformedRequestIsInvalidArgument(t *testing.T) {
	t.Parallel()
	svc := &testServer{}
	o := serveObserved(t, svc, nil)
	ctx := context.Background()

	var out []byte
	err := o.conn.Invoke(ctx, testgrpc.TestService_UnaryCall_FullMethodName, &malformed, &out, grpc.ForceCodecV2(rawCodec{}))
	st := status.Convert(err)
	require.Equal(t, codes.InvalidArgument, st.Code(), "%v", err)
	assert.Contains(t, st.Message(), "not a valid protobuf encoding of grpc.testing.SimpleRequest")
	assert.Zero(t, svc.calls.Load(), "the handler never saw it")

	// Valid bytes still go through (an empty SimpleRequest).
	valid := []byte{}
	require.NoError(t, o.conn.Invoke(ctx, testgrpc.TestService_UnaryCall_FullMethodName, &valid, &out, grpc.ForceCodecV2(rawCodec{})))
	assert.Equal(t, int32(1), svc.calls.Load())

	lines := o.linesWhere(t, "msg", "finished call", "grpc.code", "InvalidArgument")
	require.Len(t, lines, 1, o.logs.String())
	assert.Equal(t, "INFO", lines[0]["level"])
	assert.Equal(t, "UnaryCall", lines[0]["grpc.method"])

	metrics := apptest.Scrape(t, o.srv.MetricsAddr())
	v, ok := apptest.MetricValue(metrics, `grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"}`)
	assert.True(t, ok && v == 1, "counted: %v %v", v, ok)
	assert.Zero(t, o.srv.PendingDecodeErrors(), "every recorded error was taken")
}

func TestMalformedStreamMessagesAreInvalidArgument(t *testing.T) {
	t.Parallel()
	svc := &testServer{}
	o := serveObserved(t, svc, nil)
	ctx := context.Background()
	raw := grpc.ForceCodecV2(rawCodec{})

	// Client stream: the second message is broken; the handler's Recv
	// gets INVALID_ARGUMENT and returns it.
	cs, err := o.conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, testgrpc.TestService_StreamingInputCall_FullMethodName, raw)
	require.NoError(t, err)
	ok := []byte{}
	require.NoError(t, cs.SendMsg(&ok))
	broken := []byte{0x0a, 0x05, 0x12} // payload (field 1) claims 5 bytes, has 1
	require.NoError(t, cs.SendMsg(&broken))
	require.NoError(t, cs.CloseSend())
	var out []byte
	err = cs.RecvMsg(&out)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "grpc.testing.StreamingInputCallRequest")

	// Server stream: the one request is broken.
	ss, err := o.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, testgrpc.TestService_StreamingOutputCall_FullMethodName, raw)
	require.NoError(t, err)
	require.NoError(t, ss.SendMsg(&malformed))
	require.NoError(t, ss.CloseSend())
	err = ss.RecvMsg(&out)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "grpc.testing.StreamingOutputCallRequest")

	// A unary call with two messages, the second broken: refused by grpc
	// (one message only), and its recorded error does not stay behind.
	us, err := o.conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, testgrpc.TestService_UnaryCall_FullMethodName, raw)
	require.NoError(t, err)
	require.NoError(t, us.SendMsg(&ok))
	require.NoError(t, us.SendMsg(&malformed))
	require.NoError(t, us.CloseSend())
	assert.Error(t, us.RecvMsg(&out))

	metrics := apptest.Scrape(t, o.srv.MetricsAddr())
	for _, series := range []string{
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="StreamingInputCall",grpc_service="grpc.testing.TestService",grpc_type="client_stream"}`,
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="StreamingOutputCall",grpc_service="grpc.testing.TestService",grpc_type="server_stream"}`,
	} {
		v, ok := apptest.MetricValue(metrics, series)
		assert.True(t, ok && v == 1, "%s: %v %v", series, v, ok)
	}
	assert.Len(t, o.linesWhere(t, "msg", "finished call", "grpc.code", "InvalidArgument", "level", "INFO"), 2, o.logs.String())
	assert.Zero(t, o.srv.PendingDecodeErrors(), "every recorded error was taken")
}

// A service's own codec (OpLogService's, say) is used, and wrapped.
func TestServiceCodecIsWrapped(t *testing.T) {
	t.Parallel()
	codec := &countingCodec{CodecV2: encoding.GetCodecV2(grpcproto.Name)}
	svc := &testServer{}
	o := serveObserved(t, svc, func(_ *server.Config, opts *server.Options) { opts.Codec = codec })
	client := testgrpc.NewTestServiceClient(o.conn)
	_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	require.NoError(t, err)
	assert.Positive(t, codec.unmarshals.Load(), "the service's codec decoded the request")

	var out []byte
	err = o.conn.Invoke(context.Background(), testgrpc.TestService_UnaryCall_FullMethodName, &malformed, &out, grpc.ForceCodecV2(rawCodec{}))
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Zero(t, o.srv.PendingDecodeErrors())
}

type countingCodec struct {
	encoding.CodecV2
	unmarshals atomic.Int32
}

func (c *countingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.unmarshals.Add(1)
	return c.CodecV2.Unmarshal(data, v)
}
