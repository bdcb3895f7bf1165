package profilesvc

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/profile/internal/domain"
	"github.com/platforma/platforma/services/profile/internal/store"
)

// WatchConfig is WatchProfileChanges' configuration (flags -watch-*).
type WatchConfig struct {
	// Retention is how long transitions are kept; a cursor older than
	// that is expired.
	Retention time.Duration
	// MaxWatchers bounds the watches one replica serves at once.
	MaxWatchers int
	// IdleTimeout ends a watch that has sent no transition for this long
	// (0: never). It ends with OK after a bookmark: the client resumes from
	// it, on whichever replica it reaches, which spreads long-lived
	// watches over replicas that were added since.
	IdleTimeout time.Duration
	// BookmarkInterval: a watch whose cursor moved without a transition
	// to send gets a bookmark this often, so a resume after a quiet spell
	// starts close to now and cannot fall off the retention.
	BookmarkInterval time.Duration
	// PollInterval is how often each replica's tail reader looks for new
	// transitions: the floor of the delivery latency.
	PollInterval time.Duration
}

func (c *WatchConfig) registerFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Retention, "watch-retention", 7*24*time.Hour, "how long WatchProfileChanges' transitions are kept; older cursors get CURSOR_EXPIRED")
	fs.IntVar(&c.MaxWatchers, "watch-max-watchers", 1000, "WatchProfileChanges calls one replica serves at once; more get RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.IdleTimeout, "watch-idle-timeout", 10*time.Minute, "end a watch that sent no transition for this long (0: never); the client resumes from the last bookmark")
	fs.DurationVar(&c.BookmarkInterval, "watch-bookmark-interval", 10*time.Second, "how often an idle watch gets a bookmark carrying its cursor")
	fs.DurationVar(&c.PollInterval, "watch-poll-interval", 50*time.Millisecond, "how often each replica reads new transitions for its watches")
}

func (c WatchConfig) validate() []error {
	var errs []error
	if c.Retention < time.Hour {
		errs = append(errs, errors.New("WATCH_RETENTION (-watch-retention) must be at least 1h"))
	}
	if c.MaxWatchers < 1 {
		errs = append(errs, errors.New("WATCH_MAX_WATCHERS (-watch-max-watchers) must be at least 1"))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, errors.New("WATCH_IDLE_TIMEOUT (-watch-idle-timeout) must not be negative"))
	}
	if c.BookmarkInterval < 100*time.Millisecond {
		errs = append(errs, errors.New("WATCH_BOOKMARK_INTERVAL (-watch-bookmark-interval) must be at least 100ms"))
	}
	if c.PollInterval < time.Millisecond || c.PollInterval > 10*time.Second {
		errs = append(errs, errors.New("WATCH_POLL_INTERVAL (-watch-poll-interval) must be between 1ms and 10s"))
	}
	return errs
}

// withDefaults fills the zero values of a Config built in code (tests);
// IdleTimeout 0 stays "never".
func (c WatchConfig) withDefaults() WatchConfig {
	fill := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	fill(&c.Retention, 7*24*time.Hour)
	fill(&c.BookmarkInterval, 10*time.Second)
	fill(&c.PollInterval, 50*time.Millisecond)
	if c.MaxWatchers == 0 {
		c.MaxWatchers = 1000
	}
	return c
}

const (
	// ringSize is how many recent transitions a replica keeps in memory
	// for its watches. A watch further behind reads the table itself.
	ringSize = 10000
	// readBatch is one read of the table, by the tail reader or by a
	// watch that is behind.
	readBatch = 500
	// pruneBatch is one pruning transaction.
	pruneBatch = 1000
	// pruneInterval is how often old transitions are pruned.
	pruneInterval = time.Minute
)

// --- cursors ---------------------------------------------------------

// cursorVersion is the first byte of an encoded cursor: a later format
// gets another, and old cursors stay readable.
const cursorVersion = 1

func encodeWatchCursor(p store.Position) string {
	b := make([]byte, 17)
	b[0] = cursorVersion
	binary.BigEndian.PutUint64(b[1:], p.Tx)
	binary.BigEndian.PutUint64(b[9:], uint64(p.ID))
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeWatchCursor(s string) (store.Position, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 17 || b[0] != cursorVersion {
		return store.Position{}, errors.New("not a cursor of WatchProfileChanges")
	}
	p := store.Position{Tx: binary.BigEndian.Uint64(b[1:]), ID: int64(binary.BigEndian.Uint64(b[9:]))}
	if p.ID < 0 {
		return store.Position{}, errors.New("not a cursor of WatchProfileChanges")
	}
	return p, nil
}

// --- the replica's tail reader -----------------------------------------

// hub is one replica's shared tail reader: it reads new transitions once
// per poll into a ring of the newest ringSize and wakes every watch. A
// caught-up watch filters from the ring; one behind it reads the table
// at its own pace. Nothing a watch does can hold up the reader, and
// nothing here holds up writers.
type hub struct {
	st   *store.Store
	cfg  WatchConfig
	log  *slog.Logger
	mu   sync.Mutex
	ring []store.Transition // every transition in (start, tail], in order
	// start and tail bound what ring covers; ready once tail is known.
	start, tail store.Position
	ready       bool
	changed     chan struct{} // closed (and replaced) when tail moves
	stopping    chan struct{} // closed when the server starts shutting down
	stopOnce    sync.Once
	active      atomic.Int64
}

func newHub(st *store.Store, cfg WatchConfig, log *slog.Logger) *hub {
	return &hub{st: st, cfg: cfg, log: log, changed: make(chan struct{}), stopping: make(chan struct{})}
}

// stop ends every watch (UNAVAILABLE) and refuses new ones.
func (h *hub) stop() { h.stopOnce.Do(func() { close(h.stopping) }) }

// run reads the tail every PollInterval until ctx ends.
func (h *hub) run(ctx context.Context) {
	server.Every(ctx, h.cfg.PollInterval, func(ctx context.Context) {
		if err := h.poll(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("reading new profile transitions failed; retrying", "error", err)
		}
	})
}

func (h *hub) poll(ctx context.Context) error {
	h.mu.Lock()
	ready, tail := h.ready, h.tail
	h.mu.Unlock()
	if !ready {
		b, err := h.st.Bounds(ctx)
		if err != nil {
			return err
		}
		tail = b.Horizon
	}
	for {
		page, err := h.st.ReadTransitions(ctx, tail, store.TransitionFilter{}, readBatch)
		if errors.Is(err, domain.ErrCursorExpired) {
			// Stalled for longer than the retention: start over from now;
			// watches behind read the table and get the error themselves.
			h.mu.Lock()
			h.ready, h.ring = false, nil
			h.mu.Unlock()
			return err
		}
		if err != nil {
			return err
		}
		h.mu.Lock()
		if !h.ready {
			h.ready, h.start = true, tail
		}
		h.ring = append(h.ring, page.Transitions...)
		if over := len(h.ring) - ringSize; over > 0 {
			h.start = h.ring[over-1].Pos
			h.ring = append([]store.Transition(nil), h.ring[over:]...)
		}
		if h.tail != page.Next {
			h.tail = page.Next
			close(h.changed)
			h.changed = make(chan struct{})
		}
		h.mu.Unlock()
		tail = page.Next
		if len(page.Transitions) < readBatch {
			return nil
		}
	}
}

// since returns the transitions after pos that f selects and the position
// after them, from the ring; ok is false when the ring does not reach
// back to pos (the caller reads the table). changed is closed when there
// is more.
func (h *hub) since(pos store.Position, f store.TransitionFilter) (out []store.Transition, next store.Position, ok bool, changed <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ready || pos.Less(h.start) {
		return nil, pos, false, h.changed
	}
	if h.tail.Less(pos) {
		// pos comes from a fresher snapshot than the last poll.
		return nil, pos, true, h.changed
	}
	i := sort.Search(len(h.ring), func(i int) bool { return pos.Less(h.ring[i].Pos) })
	for _, t := range h.ring[i:] {
		if f.Matches(t) {
			out = append(out, t)
		}
	}
	return out, h.tail, true, h.changed
}

func (h *hub) acquire() bool {
	if h.active.Add(1) > int64(h.cfg.MaxWatchers) {
		h.active.Add(-1)
		return false
	}
	return true
}

func (h *hub) release() { h.active.Add(-1) }

// prune deletes transitions older than the retention every interval.
// Replicas take turns through an advisory lock in the store.
func (h *hub) prune(ctx context.Context, clock func() time.Time) {
	server.Every(ctx, pruneInterval, func(ctx context.Context) {
		n, err := h.st.PruneTransitions(ctx, clock().Add(-h.cfg.Retention), pruneBatch)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			h.log.Warn("pruning old profile transitions failed; retrying next round", "error", err)
		case n > 0:
			h.log.Info("pruned old profile transitions", "deleted", n, "retention", h.cfg.Retention.String())
		}
	})
}

// --- the RPC ------------------------------------------------------------

// WatchProfileChanges streams transitions; see the proto and README for
// the contract.
func (s *Server) WatchProfileChanges(req *profilev1.WatchProfileChangesRequest, stream grpc.ServerStreamingServer[profilev1.WatchProfileChangesResponse]) error {
	f, pos, resume, err := parseWatch(req)
	if err != nil {
		return err
	}
	h := s.hub
	select {
	case <-h.stopping:
		return errShuttingDown
	default:
	}
	if !h.acquire() {
		return domain.ErrTooManyWatchers.Errorf("this replica serves %d watches already; retry later or on another replica", h.cfg.MaxWatchers)
	}
	defer h.release()
	s.watchers.Inc()
	defer s.watchers.Dec()

	ctx := stream.Context()
	b, err := s.store.Bounds(ctx)
	if err != nil {
		return err
	}
	switch {
	case !resume:
		pos = b.Horizon
	case pos.Tx > b.NextTx:
		return apierr.InvalidArgument(apierr.FieldViolation("cursor", "is ahead of this stream: not a cursor of this service"))
	case pos.Less(b.Watermark):
		return domain.ErrCursorExpired.Errorf("transitions after this cursor were pruned (older than the retention): " +
			"resynchronise with ListProfiles, then watch from now (no cursor)")
	}

	sent := pos
	send := func(t *store.Transition) error {
		resp := &profilev1.WatchProfileChangesResponse{Cursor: encodeWatchCursor(pos)}
		if t != nil {
			resp.Cursor = encodeWatchCursor(t.Pos)
			resp.Transition = s.transitionToProto(*t)
			s.deliveryLag.Observe(s.now().Sub(t.RecordedAt).Seconds())
			sent = t.Pos
		} else {
			sent = pos
		}
		return stream.Send(resp)
	}
	// The first message says where the watch starts, so the client can
	// resume before any transition came.
	if err := send(nil); err != nil {
		return err
	}

	bookmarks := time.NewTicker(s.cfg.Watch.BookmarkInterval)
	defer bookmarks.Stop()
	var idle <-chan time.Time
	var idleTimer *time.Timer
	if s.cfg.Watch.IdleTimeout > 0 {
		idleTimer = time.NewTimer(s.cfg.Watch.IdleTimeout)
		defer idleTimer.Stop()
		idle = idleTimer.C
	}
	for {
		trs, next, fromRing, changed := h.since(pos, f)
		more := false
		if !fromRing {
			page, err := s.store.ReadTransitions(ctx, pos, f, readBatch)
			if err != nil {
				return err
			}
			trs, next, more = page.Transitions, page.Next, len(page.Transitions) == readBatch
		}
		for i := range trs {
			if err := send(&trs[i]); err != nil {
				return err
			}
		}
		pos = pos.Max(next)
		if len(trs) > 0 && idleTimer != nil {
			idleTimer.Reset(s.cfg.Watch.IdleTimeout)
		}
		if more {
			// Behind: read on at once, unless told to stop.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-h.stopping:
				return errShuttingDown
			default:
				continue
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.stopping:
			return errShuttingDown
		case <-idle:
			// Nothing sent for IdleTimeout: end with the position reached,
			// which the client resumes from.
			if sent != pos {
				if err := send(nil); err != nil {
					return err
				}
			}
			return nil
		case <-bookmarks.C:
			if sent != pos {
				if err := send(nil); err != nil {
					return err
				}
			}
		case <-changed:
		}
	}
}

var errShuttingDown = status.Error(codes.Unavailable, "the server is shutting down: resume from the last cursor received, on another replica")

// parseWatch validates the request; resume is false without a cursor.
func parseWatch(req *profilev1.WatchProfileChangesRequest) (f store.TransitionFilter, pos store.Position, resume bool, err error) {
	var v apierr.Violations
	if c := req.GetCursor(); c != "" {
		p, err := decodeWatchCursor(c)
		if err != nil {
			v.Add("cursor", err.Error())
		}
		pos, resume = p, true
	}
	seen := map[profilev1.StabilityGrade]bool{}
	for i, g := range req.GetGradesEntered() {
		field := fmt.Sprintf("grades_entered[%d]", i)
		if validate.Enum(&v, field, g, true) && !seen[g] {
			seen[g] = true
			f.GradesEntered = append(f.GradesEntered, int16(g))
		}
	}
	f.RefreshBecameTrue, f.RefreshBecameFalse = req.GetRefreshBecameTrue(), req.GetRefreshBecameFalse()
	if req.GetUserId() != "" {
		if id, ok := validate.UUID(&v, "user_id", req.GetUserId()); ok {
			f.UserID = &id
		}
	}
	if a := req.GetPlatformAccountId(); a != "" {
		if req.GetUserId() == "" {
			v.Add("platform_account_id", "requires user_id: an account is identified by both")
		} else if validate.Identifier.Require(&v, "platform_account_id", a) {
			f.PlatformAccountID = &a
		}
	}
	if validate.Enum(&v, "auth_type", req.GetAuthType(), false) {
		f.AuthType = int16(req.GetAuthType())
	}
	if !v.Empty() {
		return f, pos, false, v.Err()
	}
	return f, pos, resume, nil
}

// transitionToProto is the event of t. The profile is the state right
// after the change, without the recent-login window.
func (s *Server) transitionToProto(t store.Transition) *profilev1.ProfileTransition {
	p := s.toProto(store.Profile{
		ID:                  t.ProfileID,
		Account:             t.Account,
		AuthType:            t.AuthType,
		TotalLogins:         t.TotalLogins,
		SuccessLogins:       t.SuccessLogins,
		FailedLogins:        t.TotalLogins - t.SuccessLogins,
		ScoreHundredths:     t.ScoreHundredths,
		Grade:               t.NewGrade,
		ConsecutiveFailures: t.ConsecutiveFailures,
		Version:             t.Version,
		UpdateTime:          t.UpdateTime,
	})
	p.CreateTime = nil
	// As recorded with the change, whatever -refresh-after-failures is now.
	p.NeedsSessionRefresh = t.NewRefresh
	return &profilev1.ProfileTransition{
		Profile:                p,
		OldGrade:               profilev1.StabilityGrade(t.OldGrade),
		NewGrade:               profilev1.StabilityGrade(t.NewGrade),
		OldNeedsSessionRefresh: t.OldRefresh,
		NewNeedsSessionRefresh: t.NewRefresh,
		SessionStabilityScore:  domain.Score(t.ScoreHundredths),
		EventId:                t.EventID.String(),
		Outcome:                outcome(t.Success),
		OccurredAt:             timestamppb.New(t.OccurredAt),
		RecordTime:             timestamppb.New(t.RecordedAt),
	}
}
