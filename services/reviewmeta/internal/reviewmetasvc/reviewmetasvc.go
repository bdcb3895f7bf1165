// Package reviewmetasvc implements platforma.reviewmeta.v1.ReviewMetadataService:
// thin handlers that validate, call the store and convert. Each RPC's
// handler and its validation share a file: reviews.go holds the review
// metadata RPCs, replies.go the reply attempts and their statistics; the
// SQL they run is in ../store.
package reviewmetasvc

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/reviewmeta/internal/store"
)

// Limits of the API.
const (
	maxBatch = 1000
	// maxClockSkew is how far in the future fetched_at and attempted_at
	// may be.
	maxClockSkew = 5 * time.Minute
)

// Config is the service's configuration. It has no flags of its own.
type Config struct {
	// PageTokens signs and checks the page tokens of ListReviewMetadata.
	// Not a flag: app passes the ring of -page-token-keys. nil: a random
	// key of this Server.
	PageTokens *pagetoken.Keyring
}

// Server implements ReviewMetadataService.
type Server struct {
	reviewmetav1.UnimplementedReviewMetadataServiceServer
	store    *store.Store
	cfg      Config
	now      func() time.Time
	attempts *prometheus.CounterVec
}

// New returns a Server on st.
func New(st *store.Store, cfg Config) *Server {
	if cfg.PageTokens == nil {
		cfg.PageTokens = pagetoken.NewRandomKeyring()
	}
	return &Server{store: st, cfg: cfg, now: time.Now, attempts: newAttemptsCounter()}
}

// Register plugs the service into a platforma server.
func Register(r server.Registrar, pool *pgxpool.Pool, cfg Config) error {
	s := New(store.New(pool), cfg)
	reviewmetav1.RegisterReviewMetadataServiceServer(r.GRPC, s)
	return r.Metrics.Register(s.attempts)
}

// newAttemptsCounter counts recorded reply attempts; a retried
// attempt_id is not counted again.
func newAttemptsCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace,
		Name:      "reply_attempts_total",
		Help:      "Reply attempts recorded, by the review's type and whether the reply was posted (success) or not (failure).",
	}, []string{"review_type", "result"})
	for n := range reviewmetav1.ReviewType_name {
		if n != 0 {
			c.WithLabelValues(metrics.EnumLabel(reviewmetav1.ReviewType(n)), "success")
			c.WithLabelValues(metrics.EnumLabel(reviewmetav1.ReviewType(n)), "failure")
		}
	}
	return c
}
