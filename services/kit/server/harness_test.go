package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"

	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
)

// observed is a running server whose log lines (JSON, every level) the
// test reads.
type observed struct {
	srv  *server.Server
	conn *grpc.ClientConn
	logs *syncBuffer
}

// serveObserved starts a server for svc with a JSON logger at debug;
// configure, if set, adjusts its configuration first.
func serveObserved(t *testing.T, svc *testServer, configure func(*server.Config, *server.Options)) *observed {
	t.Helper()
	logs := &syncBuffer{}
	cfg := server.Config{
		ListenAddr:      "127.0.0.1:0",
		MetricsAddr:     "127.0.0.1:0",
		ShutdownTimeout: 5 * time.Second,
		HealthInterval:  time.Second,
		MaxRecvMsgSize:  4 << 20,
		Insecure:        true,
	}
	opts := server.Options{
		WithoutAuth: true,
		Logger:      slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Database:    pgtest.NewPool(t),
		Register: func(r server.Registrar) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, svc)
			return nil
		},
	}
	if configure != nil {
		configure(&cfg, &opts)
	}
	srv, err := server.New(cfg, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	return &observed{srv: srv, conn: conn, logs: logs}
}

// lines returns the log lines, decoded.
func (o *observed) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(o.logs.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

// linesWhere returns the lines whose fields include every key=value given.
func (o *observed) linesWhere(t *testing.T, kv ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range o.lines(t) {
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			if v, ok := m[kv[i]]; !ok || v != kv[i+1] {
				match = false
				break
			}
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// rawCodec sends and receives *[]byte as they are: a client that can
// send any bytes at all.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
