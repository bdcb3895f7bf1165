package oplogsvc

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/platforma/platforma/services/kit/balance"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/relay"
)

// registerRelay dials ProfileService at cfg.ProfileAddr and adds the login
// relay to the server's background tasks, and its metrics. Register calls
// it when there is a ProfileAddr.
func (s *Server) registerRelay(r server.Registrar, cfg Config) error {
	creds, err := cfg.ProfileTLS.dialOptions(s.log)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(cfg.ProfileAddr, append(creds,
		// Every ProfileService replica PROFILE_ADDR resolves to takes its
		// turn; a replica that goes away is skipped.
		balance.RoundRobin(),
		// The relay's health probes (every 200ms while it backs off)
		// would each be a trace of their own.
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))),
		// While ProfileService is down, try to reconnect at least every
		// half second (600ms with jitter), not after gRPC's default of up
		// to two minutes: the relay resumes once its health probe gets
		// through on this connection, which should be within a second of
		// ProfileService being back. An attempt against a server that is
		// down is a refused connection.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 5 * time.Second,
		}))...)
	if err != nil {
		return fmt.Errorf("PROFILE_ADDR: %w", err)
	}
	rel := relay.New(s.store, conn, relay.Config{
		BatchSize:       cfg.LoginRelayBatch,
		PollInterval:    cfg.LoginRelayInterval,
		StandbyInterval: min(5*cfg.LoginRelayInterval, 5*time.Second),
		InitialBackoff:  200 * time.Millisecond,
		// The cap spares a ProfileService that is up but failing
		// deliveries; after an outage the health probe ends the wait.
		MaxBackoff:  30 * time.Second,
		HealthProbe: 200 * time.Millisecond,
		CallTimeout: 30 * time.Second,
	}, s.log)
	if err := registerAll(r.Metrics, rel.Collectors()); err != nil {
		_ = conn.Close()
		return err
	}
	r.Background("login relay", func(ctx context.Context) {
		defer conn.Close()
		rel.Run(ctx)
	})
	return nil
}
