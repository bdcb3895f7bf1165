package server_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/server"
)

// Request headers beyond the limit are refused by the server itself,
// whatever the client does: it never allocates them, and the call never
// reaches a handler.
func TestHeadersOverTheLimitAreRefused(t *testing.T) {
	t.Parallel()
	svc := &testServer{}
	o := serveObserved(t, svc, nil) // the default limit, 16 KiB

	small := rawCall(t, o.srv.Addr(), strings.Repeat("a", 1<<10))
	assert.Equal(t, "answered 0", small, "a 1 KiB header is fine")
	assert.Equal(t, int32(1), svc.calls.Load())

	big := rawCall(t, o.srv.Addr(), strings.Repeat("a", 64<<10))
	assert.Contains(t, []string{"reset", "goaway", "closed"}, big, "a 64 KiB header is refused")
	assert.Equal(t, int32(1), svc.calls.Load(), "the refused call never reached the handler")

	// grpc clients learn the limit from the server's settings and refuse
	// to send more.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-big", strings.Repeat("a", 64<<10))
	_, err := testgrpc.NewTestServiceClient(o.conn).UnaryCall(ctx, &testgrpc.SimpleRequest{})
	require.Error(t, err)
	assert.Equal(t, int32(1), svc.calls.Load())
}

// rawCall sends one UnaryCall by hand over HTTP/2 with an x-big header of
// the given value and says what came back: "answered <grpc-status>",
// "reset" (RST_STREAM), "goaway" or "closed".
func rawCall(t *testing.T, addr, big string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	fr.SetMaxReadFrameSize(1 << 20)
	require.NoError(t, fr.WriteSettings())

	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", testgrpc.TestService_UnaryCall_FullMethodName},
		{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}, {"x-big", big},
	} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	const chunk = 16 << 10 // the server's SETTINGS_MAX_FRAME_SIZE
	b := block.Bytes()
	first := b[:min(chunk, len(b))]
	b = b[len(first):]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) == 0}); err != nil {
		return "closed"
	}
	for len(b) > 0 {
		next := b[:min(chunk, len(b))]
		b = b[len(next):]
		if err := fr.WriteContinuation(1, len(b) == 0, next); err != nil {
			return "closed"
		}
	}
	// An empty SimpleRequest, and the end of the request.
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		return "closed"
	}
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "closed"
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			return "reset"
		case *http2.GoAwayFrame:
			return "goaway"
		case *http2.HeadersFrame:
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			require.NoError(t, err)
			for _, hf := range fields {
				if hf.Name == "grpc-status" {
					return "answered " + hf.Value
				}
			}
		}
	}
}

// limited starts a server with short receive limits.
func limited(t *testing.T, svc *testServer) *observed {
	return serveObserved(t, svc, func(cfg *server.Config, _ *server.Options) {
		cfg.Limits.RecvTimeout = 300 * time.Millisecond
		cfg.Limits.RecvIdleTimeout = 300 * time.Millisecond
	})
}

// A call whose request does not arrive is cut off after RecvTimeout:
// the client is told why, one WARN line says so, and it is counted.
func TestHalfSentCallsAreCutOff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		desc   grpc.StreamDesc
		method string
		send   bool // the request message, but not the end of the stream
		idle   bool // a client stream's next message
	}{
		{name: "unary, headers only", method: "UnaryCall"},
		// ClientStreams on the client's side only: grpc would otherwise end
		// the stream with the message.
		{name: "unary, message but no end of stream", desc: grpc.StreamDesc{ClientStreams: true}, method: "UnaryCall", send: true},
		{name: "server streaming, headers only", desc: grpc.StreamDesc{ServerStreams: true}, method: "StreamingOutputCall"},
		{name: "client streaming, idle after a message", desc: grpc.StreamDesc{ClientStreams: true}, method: "StreamingInputCall", send: true, idle: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc := &testServer{}
			o := limited(t, svc)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			began := time.Now()
			cs, err := o.conn.NewStream(ctx, &tc.desc, "/grpc.testing.TestService/"+tc.method)
			require.NoError(t, err)
			if tc.send {
				require.NoError(t, cs.SendMsg(&testgrpc.SimpleRequest{}))
			}
			var resp testgrpc.SimpleResponse
			err = cs.RecvMsg(&resp)
			took := time.Since(began)

			st := status.Convert(err)
			require.Equal(t, codes.DeadlineExceeded, st.Code(), "%v", err)
			if tc.idle {
				assert.Contains(t, st.Message(), "no message from the client for 300ms")
			} else {
				assert.Contains(t, st.Message(), "did not arrive within 300ms")
				assert.Zero(t, svc.calls.Load(), "no handler ran")
			}
			assert.GreaterOrEqual(t, took, 300*time.Millisecond)
			assert.Less(t, took, 10*time.Second)

			require.Eventually(t, func() bool {
				return len(o.linesWhere(t, "msg", "call cut off: the client did not send in time")) == 1
			}, 5*time.Second, 10*time.Millisecond, o.logs.String())
			line := o.linesWhere(t, "msg", "call cut off: the client did not send in time")[0]
			assert.Equal(t, "WARN", line["level"])
			assert.Equal(t, tc.method, line["grpc.method"])
			assert.Equal(t, "300ms", line["limit"])
			assert.NotEmpty(t, line["peer.address"])
			for _, l := range o.lines(t) {
				assert.NotEqual(t, "ERROR", l["level"], l)
			}

			v, ok := apptest.MetricValue(apptest.Scrape(t, o.srv.MetricsAddr()),
				`grpc_server_receive_timeouts_total{grpc_method="`+tc.method+`",grpc_service="grpc.testing.TestService"}`)
			assert.True(t, ok && v == 1, "counted: %v %v", v, ok)
		})
	}
}

// Well-behaved calls are not affected: a handler slower than the limits,
// a client stream that keeps sending, a stream whose handler is busy
// between messages.
func TestReceiveLimitsSpareWellBehavedCalls(t *testing.T) {
	t.Parallel()
	svc := &testServer{
		unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			time.Sleep(700 * time.Millisecond) // longer than RecvTimeout
			return &testgrpc.SimpleResponse{Username: "done"}, ctx.Err()
		},
		inputDelay: 200 * time.Millisecond,
	}
	o := limited(t, svc)
	client := testgrpc.NewTestServiceClient(o.conn)
	ctx := context.Background()

	resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	require.NoError(t, err)
	assert.Equal(t, "done", resp.GetUsername())

	// 6 messages 200 ms apart (1.2 s, 4× the idle limit), each handled in
	// 200 ms: the stream is never idle for 300 ms.
	stream, err := client.StreamingInputCall(ctx)
	require.NoError(t, err)
	for range 6 {
		require.NoError(t, stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: []byte("ab")}}))
		time.Sleep(200 * time.Millisecond)
	}
	sum, err := stream.CloseAndRecv()
	require.NoError(t, err)
	assert.Equal(t, int32(12), sum.GetAggregatedPayloadSize())

	// The handler takes 200 ms per message; two messages sent at once
	// wait in the stream for it: only time spent waiting for the client
	// counts.
	svc.inputDelay = 500 * time.Millisecond
	stream, err = client.StreamingInputCall(ctx)
	require.NoError(t, err)
	for range 2 {
		require.NoError(t, stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: []byte("a")}}))
	}
	sum, err = stream.CloseAndRecv()
	require.NoError(t, err)
	assert.Equal(t, int32(2), sum.GetAggregatedPayloadSize())

	// A health watch outlives the limits: its request arrived at once,
	// then only the server sends.
	watch, err := healthgrpc.NewHealthClient(o.conn).Watch(ctx, &healthgrpc.HealthCheckRequest{Service: testService})
	require.NoError(t, err)
	_, err = watch.Recv()
	require.NoError(t, err)
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		t.Fatalf("the watch ended: %v", err)
	case <-time.After(time.Second):
	}

	assert.Empty(t, o.linesWhere(t, "msg", "call cut off: the client did not send in time"))
}

// Beyond MaxConcurrentStreams, a client's further calls wait for one of
// its calls to end; they are not refused.
func TestConcurrentStreamsPerConnectionAreBounded(t *testing.T) {
	t.Parallel()
	var entered atomic.Int32
	release := make(chan struct{})
	svc := &testServer{unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		entered.Add(1)
		<-release
		return &testgrpc.SimpleResponse{}, nil
	}}
	o := serveObserved(t, svc, func(cfg *server.Config, _ *server.Options) { cfg.Limits.MaxConcurrentStreams = 2 })
	client := testgrpc.NewTestServiceClient(o.conn)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return entered.Load() == 2 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, int32(2), entered.Load(), "the third call waits")
	close(release)
	for range 3 {
		require.NoError(t, <-errs)
	}
	assert.Equal(t, int32(3), entered.Load())
}

// A connection older than MaxConnectionAge is closed gracefully: the
// call in flight finishes, and the client goes on over a new connection.
func TestConnectionBeyondMaxAgeIsClosedGracefully(t *testing.T) {
	t.Parallel()
	svc := &testServer{unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		time.Sleep(time.Second)
		return &testgrpc.SimpleResponse{Username: "finished"}, nil
	}}
	o := serveObserved(t, svc, func(cfg *server.Config, _ *server.Options) {
		cfg.Limits.MaxConnectionAge = 300 * time.Millisecond
		cfg.Limits.MaxConnectionAgeGrace = 10 * time.Second
	})
	conns := &connCounter{}
	conn, err := grpc.NewClient(o.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(conns))
	require.NoError(t, err)
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)

	// In flight across the connection's 300 ms age: finishes normally.
	resp, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	require.NoError(t, err)
	assert.Equal(t, "finished", resp.GetUsername())
	require.Eventually(t, func() bool { return conns.ended.Load() >= 1 }, 10*time.Second, 10*time.Millisecond,
		"the old connection is closed once its call is done")

	resp, err = client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	require.NoError(t, err, "the next call goes over a new connection")
	assert.Equal(t, "finished", resp.GetUsername())
	assert.GreaterOrEqual(t, conns.began.Load(), int32(2))
}

type connCounter struct{ began, ended atomic.Int32 }

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	switch s.(type) {
	case *stats.ConnBegin:
		c.began.Add(1)
	case *stats.ConnEnd:
		c.ended.Add(1)
	}
}

// The flags reach the server: `serve` with -recv-timeout and
// -max-header-list-bytes, end to end, as the binary runs.
func TestServeFlagsSetTheLimits(t *testing.T) {
	t.Parallel()
	svc := &testServer{}
	s := apptest.Start(t, app.Service{
		Name:               "limitsvc",
		DefaultListenAddr:  ":0",
		DefaultMetricsAddr: ":0",
		Migrations:         migrations.Profile,
		Register: func(r server.Registrar, _ db.Pools) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, svc)
			return nil
		},
		// rawCall speaks plaintext HTTP/2 without credentials.
		Methods: auth.Methods.With(auth.AllMethods(&testgrpc.TestService_ServiceDesc, auth.Rule{Public: true})),
	}, testService, "-recv-timeout=200ms", "-max-header-list-bytes=4096", "-insecure")

	cs, err := s.Conn.NewStream(context.Background(), &grpc.StreamDesc{}, testgrpc.TestService_UnaryCall_FullMethodName)
	require.NoError(t, err)
	err = cs.RecvMsg(&testgrpc.SimpleResponse{})
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "200ms")
	assert.Contains(t, []string{"reset", "goaway", "closed"}, rawCall(t, s.Addr, strings.Repeat("a", 8<<10)), "8 KiB of headers over a 4 KiB limit")
	assert.Equal(t, "answered 0", rawCall(t, s.Addr, strings.Repeat("a", 2<<10)), "2 KiB are fine")
	require.Eventually(t, func() bool {
		return strings.Contains(s.Logs(), "level=WARN msg=\"call cut off: the client did not send in time\"")
	}, 5*time.Second, 10*time.Millisecond, s.Logs())
	assert.NotContains(t, s.Logs(), "level=ERROR")
}
