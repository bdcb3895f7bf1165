package server

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// This file guards the receiving side of every call:
//
//   - receive timeouts: a unary or server-streaming call whose request
//     (the message and the end of the client's stream) does not arrive
//     within RecvTimeout of the call's start, and a client-streaming call
//     that waits RecvIdleTimeout for the client's next message, are cut
//     off with DEADLINE_EXCEEDED, one WARN line and
//     grpc_server_receive_timeouts_total;
//   - malformed requests: bytes that are not a valid protobuf encoding of
//     the request message are answered INVALID_ARGUMENT, inside the
//     interceptor chain, so they are logged and counted like any refusal.
//
// grpc-go decodes a unary request in the generated handler before the unary
// interceptors run, and a failing receive writes its status to the client
// at once. So the guard works one level lower: every service registered
// through the Registrar has its method handlers wrapped (guardRegistrar),
// which is where a receive starts and ends, and the server's codec
// (decodeCodec) reports an undecodable message to the guard instead of
// failing the receive.
//
// Why not a stats.Handler that cancels the context it returns from TagRPC:
// the transport's reader selects on the stream context captured when the
// headers arrived, before TagRPC, so cancelling TagRPC's context does not
// wake a blocked receive (grpc v1.85 internal/transport/http2_server.go,
// operateHeaders). Writing the status on the transport stream does: it
// sends the trailers, resets the stream and cancels that context.

// guard holds what the wrapped handlers share.
type guard struct {
	log         *slog.Logger
	recvTimeout time.Duration
	idleTimeout time.Duration
	timeouts    *prometheus.CounterVec
	// decodeErrs maps a message (the pointer grpc decoded into) to the
	// error its decoding returned, from decodeCodec.Unmarshal until the
	// wrapped receive that asked for it returns and takes it.
	decodeErrs sync.Map
	pending    atomic.Int64 // entries in decodeErrs, for tests
}

func newGuard(log *slog.Logger, recvTimeout, idleTimeout time.Duration) *guard {
	return &guard{
		log:         log,
		recvTimeout: recvTimeout,
		idleTimeout: idleTimeout,
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_receive_timeouts_total",
			Help: "Calls cut off because the client did not send its request (unary and server-streaming: RECV_TIMEOUT) or its next message (client-streaming: RECV_IDLE_TIMEOUT) in time.",
		}, []string{"grpc_service", "grpc_method"}),
	}
}

// --- registration -----------------------------------------------------

// guardRegistrar registers services with their handlers wrapped by the
// guard. It also satisfies reflection.GRPCServer.
type guardRegistrar struct {
	srv *grpc.Server
	g   *guard
}

func (r guardRegistrar) GetServiceInfo() map[string]grpc.ServiceInfo { return r.srv.GetServiceInfo() }

func (r guardRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	wrapped := *desc
	wrapped.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, md := range desc.Methods {
		wrapped.Methods[i] = r.g.wrapUnary(desc.ServiceName, md)
		r.g.timeouts.WithLabelValues(desc.ServiceName, md.MethodName)
	}
	wrapped.Streams = make([]grpc.StreamDesc, len(desc.Streams))
	for i, sd := range desc.Streams {
		wrapped.Streams[i] = r.g.wrapStream(desc.ServiceName, sd)
		r.g.timeouts.WithLabelValues(desc.ServiceName, sd.StreamName)
	}
	r.srv.RegisterService(&wrapped, impl)
}

// unaryCall is what the wrapped unary handler tells the interceptors.
type unaryCall struct {
	decodeErr error // the request could not be decoded
}

type unaryCallKey struct{}

// wrapUnary arms the receive timer when the call starts and stops it when
// the request has been received; it records a decoding failure for
// decodeInterceptor, which runs inside logging and metrics.
func (g *guard) wrapUnary(service string, md grpc.MethodDesc) grpc.MethodDesc {
	handler := md.Handler
	method := md.MethodName
	md.Handler = func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		call := &unaryCall{}
		w := g.watch(ctx, service, method, g.recvTimeout, false)
		defer w.close()
		ctx = context.WithValue(ctx, unaryCallKey{}, call)
		return handler(srv, ctx, func(m any) error {
			err := dec(m)
			if w.close() {
				// The client was told; the handler does not run.
				err = w.err()
			}
			if derr := g.take(m); derr != nil && err == nil {
				call.decodeErr = derr
			}
			return err
		}, interceptor)
	}
	return md
}

// wrapStream does the same for streaming calls, around each RecvMsg.
func (g *guard) wrapStream(service string, sd grpc.StreamDesc) grpc.StreamDesc {
	handler := sd.Handler
	method := sd.StreamName
	clientStreams := sd.ClientStreams
	sd.Handler = func(srv any, ss grpc.ServerStream) error {
		rs := &recvStream{ServerStream: ss, g: g}
		if clientStreams {
			// Armed only while the handler waits in RecvMsg: a handler
			// busy with the last message does not count against the client.
			rs.w = g.watch(ss.Context(), service, method, g.idleTimeout, true)
			rs.w.pause()
		} else {
			// The one request message, from the call's start.
			rs.w = g.watch(ss.Context(), service, method, g.recvTimeout, false)
		}
		defer rs.w.close()
		return handler(srv, rs)
	}
	return sd
}

type recvStream struct {
	grpc.ServerStream
	g *guard
	w *recvWatch
}

func (s *recvStream) RecvMsg(m any) error {
	idle := s.w.idle
	if idle {
		s.w.resume()
	}
	err := s.ServerStream.RecvMsg(m)
	var fired bool
	if idle {
		fired = s.w.pause()
	} else {
		fired = s.w.close()
	}
	if fired {
		err = s.w.err()
	}
	if derr := s.g.take(m); derr != nil && err == nil {
		err = derr
	}
	return err
}

// --- receive timeouts -------------------------------------------------

// recvWatch cuts a call off unless paused or closed within its limit.
type recvWatch struct {
	g       *guard
	ctx     context.Context
	service string
	method  string
	limit   time.Duration
	idle    bool // waiting for a client stream's next message

	mu       sync.Mutex
	timer    *time.Timer
	deadline time.Time // when the armed limit ends
	armed    bool
	closed   bool
	fired    bool
}

// watch returns an armed watch.
func (g *guard) watch(ctx context.Context, service, method string, limit time.Duration, idle bool) *recvWatch {
	w := &recvWatch{g: g, ctx: ctx, service: service, method: method, limit: limit, idle: idle, armed: true}
	w.mu.Lock()
	w.deadline = time.Now().Add(limit)
	w.timer = time.AfterFunc(limit, w.fire)
	w.mu.Unlock()
	return w
}

// pause disarms the watch until resume and reports whether it fired.
func (w *recvWatch) pause() (fired bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	w.timer.Stop()
	return w.fired
}

// resume arms the watch again for its whole limit, unless it was closed
// or fired.
func (w *recvWatch) resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.fired {
		return
	}
	w.armed = true
	w.deadline = time.Now().Add(w.limit)
	w.timer.Reset(w.limit)
}

// close disarms the watch for good and reports whether it fired. Safe to
// call more than once.
func (w *recvWatch) close() (fired bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.armed = false
	w.timer.Stop()
	return w.fired
}

// err is the status the client got when the watch fired.
func (w *recvWatch) err() error { return w.status().Err() }

func (w *recvWatch) status() *status.Status {
	if w.idle {
		return status.Newf(codes.DeadlineExceeded, "no message from the client for %s; a stream must keep sending or close its side", w.limit)
	}
	return status.Newf(codes.DeadlineExceeded, "the request did not arrive within %s of the call's start; send the request message and close the sending side promptly", w.limit)
}

func (w *recvWatch) fire() {
	w.mu.Lock()
	// A call that already ended (finished, cancelled, past its deadline)
	// is not the client's silence.
	// A run left over from an earlier arming finds the deadline ahead.
	if !w.armed || w.fired || w.ctx.Err() != nil || time.Now().Before(w.deadline) {
		w.mu.Unlock()
		return
	}
	w.fired = true
	w.mu.Unlock()

	w.g.timeouts.WithLabelValues(w.service, w.method).Inc()
	waitingFor := "request"
	if w.idle {
		waitingFor = "next message"
	}
	attrs := []any{
		"grpc.service", w.service, "grpc.method", w.method,
		"grpc.code", codes.DeadlineExceeded.String(), "waiting_for", waitingFor, "limit", w.limit.String(),
	}
	if p, ok := peer.FromContext(w.ctx); ok && p.Addr != nil {
		attrs = append(attrs, "peer.address", p.Addr.String())
	}
	w.g.log.WarnContext(w.ctx, "call cut off: the client did not send in time", attrs...)

	// Writing the status ends the stream: the trailers go out (the client
	// sees this status, not a bare cancellation), the stream is reset if
	// the client has not closed its side, and the stream's context is
	// cancelled, which wakes the blocked receive.
	if ws, ok := grpc.ServerTransportStreamFromContext(w.ctx).(interface {
		WriteStatus(*status.Status) error
	}); ok {
		_ = ws.WriteStatus(w.status())
	}
}

// --- malformed requests -----------------------------------------------

// decodeCodec wraps the service's codec: when a request cannot be
// decoded, it records the error for the message and reports success, so
// that the receive completes and the guard answers INVALID_ARGUMENT where
// interceptors see it. grpc would answer INTERNAL before any interceptor.
type decodeCodec struct {
	inner encoding.CodecV2
	g     *guard
}

func (c decodeCodec) Name() string { return c.inner.Name() }

func (c decodeCodec) Marshal(v any) (mem.BufferSlice, error) { return c.inner.Marshal(v) }

func (c decodeCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.inner.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	if v == nil || !reflect.TypeOf(v).Comparable() {
		return err // cannot be a key; grpc reports it as before
	}
	if _, loaded := c.g.decodeErrs.Swap(v, invalidRequest(v, err)); !loaded {
		c.g.pending.Add(1)
	}
	return nil
}

// take removes and returns the decoding error recorded for m, if any.
// Every wrapped receive calls it once the receive returns, whatever its
// outcome, so no entry outlives its call.
func (g *guard) take(m any) error {
	if m == nil || !reflect.TypeOf(m).Comparable() {
		return nil
	}
	v, ok := g.decodeErrs.LoadAndDelete(m)
	if !ok {
		return nil
	}
	g.pending.Add(-1)
	return v.(error)
}

func invalidRequest(m any, err error) error {
	name := strings.TrimPrefix(fmt.Sprintf("%T", m), "*")
	if pm, ok := m.(proto.Message); ok {
		name = string(pm.ProtoReflect().Descriptor().FullName())
	}
	return status.Errorf(codes.InvalidArgument, "the request is not a valid protobuf encoding of %s: %v", name, err)
}

// decodeInterceptor answers a unary call whose request could not be
// decoded (see wrapUnary) without calling the handler. Streams get the
// error from RecvMsg instead (recvStream).
func decodeInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if call, ok := ctx.Value(unaryCallKey{}).(*unaryCall); ok && call.decodeErr != nil {
		return nil, call.decodeErr
	}
	return handler(ctx, req)
}
