// Package profilesvc implements platforma.profile.v1.ProfileService: thin
// handlers that validate, call the store and convert. Each RPC's handler
// and its validation share a file: record.go holds the writes
// (RecordLoginResult, BatchRecordLoginResults), profiles.go the reads; the
// SQL they run is in ../store.
package profilesvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/domain"
	"github.com/platforma/platforma/services/profile/internal/store"
)

// Config is ProfileService's own configuration.
type Config struct {
	// RefreshAfterFailures is N of needs_session_refresh: the newest N
	// logins all failed.
	RefreshAfterFailures int
	// MaxEventAge is how old an occurred_at may be. event_ids are
	// remembered for MaxEventAge plus a day, so a retry of any event that
	// is still accepted is recognised as a repeat.
	MaxEventAge time.Duration
	// Watch configures WatchProfileChanges (flags -watch-*).
	Watch WatchConfig
	// PageTokens signs and checks ListProfiles' page tokens. Not a flag:
	// app passes the ring of -page-token-keys. nil: a random key of this
	// Server.
	PageTokens *pagetoken.Keyring
}

// RegisterFlags adds -refresh-after-failures, -max-event-age and the
// -watch-* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.RefreshAfterFailures, "refresh-after-failures", 3, "needs_session_refresh when the newest N logins all failed (1-10)")
	fs.DurationVar(&c.MaxEventAge, "max-event-age", 35*24*time.Hour, "oldest occurred_at accepted; event ids are kept this long plus a day")
	c.Watch.registerFlags(fs)
}

// Validate checks the values.
func (c *Config) Validate() error {
	var errs []error
	if c.RefreshAfterFailures < 1 || c.RefreshAfterFailures > domain.WindowSize {
		errs = append(errs, fmt.Errorf("REFRESH_AFTER_FAILURES (-refresh-after-failures) must be between 1 and %d", domain.WindowSize))
	}
	if c.MaxEventAge < time.Hour {
		errs = append(errs, fmt.Errorf("MAX_EVENT_AGE (-max-event-age) must be at least 1h"))
	}
	errs = append(errs, c.Watch.validate()...)
	return errors.Join(errs...)
}

// eventRetention is how long event ids are remembered: longer than any
// occurred_at that is still accepted can be old.
func (c Config) eventRetention() time.Duration { return c.MaxEventAge + 24*time.Hour }

// Limits of the API.
const (
	maxBatch = 1000
	// maxClockSkew is how far in the future occurred_at may be.
	maxClockSkew = 5 * time.Minute
)

// Server implements ProfileService.
type Server struct {
	profilev1.UnimplementedProfileServiceServer
	store  *store.Store
	cfg    Config
	now    func() time.Time
	logins *prometheus.CounterVec
	// WatchProfileChanges: the replica's tail reader and the metrics.
	hub         *hub
	watchers    prometheus.Gauge
	deliveryLag prometheus.Histogram
	transitions *prometheus.CounterVec
	// gradeRanges are the grades' score ranges, read from the database
	// once (they change only with a migration, which comes with a
	// deploy): ListProfiles checks page tokens against them.
	gradeRanges atomic.Pointer[map[int16]store.GradeRange]
}

// New returns a Server on st.
func New(st *store.Store, cfg Config) *Server {
	if cfg.PageTokens == nil {
		cfg.PageTokens = pagetoken.NewRandomKeyring()
	}
	cfg.Watch = cfg.Watch.withDefaults()
	return &Server{
		store: st, cfg: cfg, now: time.Now, logins: newLoginsCounter(),
		hub:      newHub(st, cfg.Watch, slog.New(slog.DiscardHandler)),
		watchers: newWatchersGauge(), deliveryLag: newDeliveryLag(), transitions: newTransitionsCounter(),
	}
}

// Register plugs the service and its idempotency-record janitor into a
// platforma server. ListProfiles and GetStabilityDistribution read
// through pools.Reads (a read replica, while fresh); GetProfile and the
// writes use pools.Primary.
func Register(r server.Registrar, pools db.Pools, cfg Config) error {
	_, err := register(r, pools, cfg)
	return err
}

// register is Register, returning the Server for the package's tests.
func register(r server.Registrar, pools db.Pools, cfg Config) (*Server, error) {
	st := store.New(pools.Primary, pools.Reads)
	s := New(st, cfg)
	profilev1.RegisterProfileServiceServer(r.GRPC, s)
	for _, c := range []prometheus.Collector{s.logins, s.watchers, s.deliveryLag, s.transitions} {
		if err := r.Metrics.Register(c); err != nil {
			return nil, err
		}
	}
	if err := r.Metrics.Register(newProfilesGauge(st, r.Logger)); err != nil {
		return nil, err
	}
	r.Background("login event janitor", func(ctx context.Context) {
		runJanitor(ctx, st, cfg.eventRetention(), time.Hour, s.now, r.Logger)
	})
	s.hub.log = r.Logger
	r.Background("profile transition tail reader", s.hub.run)
	r.Background("profile transition pruner", func(ctx context.Context) { s.hub.prune(ctx, s.now) })
	// Watches end when the shutdown starts, not when the shutdown timeout
	// cuts them off: they never finish by themselves.
	go func() {
		<-r.Stopping()
		s.hub.stop()
	}()
	return s, nil
}
