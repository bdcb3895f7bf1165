package profilesvc

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/profile/internal/store"
)

// newLoginsCounter counts applied login outcomes (repeats of an event_id
// are not counted again), whether they came from a worker or were
// forwarded from the operation log.
func newLoginsCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace,
		Name:      "logins_total",
		Help:      "Login outcomes applied to profiles, by outcome and the auth type reported with them.",
	}, []string{"outcome", "auth_type"})
	// Every series exists from the start, so rate() and ratios see zeros
	// rather than nothing.
	for _, o := range []commonv1.Outcome{commonv1.Outcome_OUTCOME_SUCCESS, commonv1.Outcome_OUTCOME_FAILED} {
		for n := range commonv1.AuthType_name {
			c.WithLabelValues(metrics.EnumLabel(o), metrics.EnumLabel(commonv1.AuthType(n)))
		}
	}
	return c
}

func (s *Server) countLogin(r store.LoginResult) {
	outcome := commonv1.Outcome_OUTCOME_FAILED
	if r.Success {
		outcome = commonv1.Outcome_OUTCOME_SUCCESS
	}
	s.logins.WithLabelValues(metrics.EnumLabel(outcome), metrics.EnumLabel(commonv1.AuthType(r.AuthType))).Inc()
}

// profilesRefresh bounds how often the grade counts are read: a scan of
// every profile, cheap at tens of thousands, worth sharing between
// scrapes beyond that.
const profilesRefresh = 30 * time.Second

// newProfilesGauge reports the number of profiles per stability grade
// (the dashboard's stability distribution panel), every grade always present.
func newProfilesGauge(st *store.Store, log *slog.Logger) prometheus.Collector {
	desc := prometheus.NewDesc(metrics.Namespace+"_profiles",
		"Profiles per stability grade. Read from the database, so every replica reports the same value: aggregate with max.",
		[]string{"grade"}, nil)
	return metrics.NewPolled(profilesRefresh, log, func(ctx context.Context) ([]metrics.Sample, error) {
		counts, err := st.Distribution(ctx)
		if err != nil {
			return nil, err
		}
		byGrade := map[int16]float64{}
		for _, c := range counts {
			byGrade[c.Grade] += float64(c.Profiles)
		}
		var out []metrics.Sample
		for _, g := range []profilev1.StabilityGrade{
			profilev1.StabilityGrade_STABILITY_GRADE_STABLE,
			profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE,
			profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL,
		} {
			out = append(out, metrics.Sample{Desc: desc, LabelValues: []string{metrics.EnumLabel(g)}, Value: byGrade[int16(g)]})
		}
		return out, nil
	}, desc)
}

// newWatchersGauge counts the WatchProfileChanges calls this replica
// serves now.
func newWatchersGauge() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metrics.Namespace,
		Name:      "profile_watchers",
		Help:      "WatchProfileChanges calls open on this replica.",
	})
}

// newDeliveryLag observes, for every transition a watch sends, how long
// after it was recorded it was sent. It includes the wait for older
// transactions still running anywhere in the cluster (the watch's horizon,
// see store.TransitionsAfter): a long write transaction shows here.
func newDeliveryLag() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metrics.Namespace,
		Name:      "profile_watch_delivery_lag_seconds",
		Help:      "Time from a profile transition's recording (its transaction's start) to its sending to a watch.",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	})
}

// newTransitionsCounter counts recorded transitions by the grade entered
// (or kept, when only needs_session_refresh changed).
func newTransitionsCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace,
		Name:      "profile_transitions_total",
		Help:      "Profile transitions recorded (grade or needs_session_refresh changed, or profile created), by new grade.",
	}, []string{"grade"})
	for _, g := range []profilev1.StabilityGrade{
		profilev1.StabilityGrade_STABILITY_GRADE_STABLE,
		profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE,
		profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL,
	} {
		c.WithLabelValues(metrics.EnumLabel(g))
	}
	return c
}

func (s *Server) countTransitions(byGrade map[int16]int) {
	for g, n := range byGrade {
		s.transitions.WithLabelValues(metrics.EnumLabel(profilev1.StabilityGrade(g))).Add(float64(n))
	}
}
