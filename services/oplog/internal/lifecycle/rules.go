package lifecycle

import (
	"time"

	"github.com/platforma/platforma/services/oplog/internal/store"
)

// Action is one step a month needs.
type Action string

// The steps, in the order a month goes through them.
const (
	// Finish an interrupted detach, or detach, then attach to the archive.
	Archive Action = "archive"
	// Write the month to cold storage, read it back and verify it.
	Export Action = "export"
	// Drop the month's partition (its verified export stays).
	Drop Action = "drop"
	// Drop without a verified export (only with DropWithoutExport).
	DropUnexported Action = "drop-without-export"
	// The partition is gone and the record says verified: record it as
	// dropped (a crash between the drop and its record).
	RecordDropped Action = "record-dropped"
)

// MonthView is what is known of one month when deciding.
type MonthView struct {
	Month time.Time
	// Partition is nil when the month has no partition.
	Partition *store.MonthPartition
	// Record is nil when the lifecycle never recorded the month.
	Record *store.Month
	// Newest is the newest create_time in the partition (zero: empty or
	// not read); HasFacts says it was read.
	Newest   time.Time
	HasFacts bool
}

// verified reports whether the month has an export that was verified.
func (v MonthView) verified() bool {
	return v.Record != nil && v.Record.ExportID != nil &&
		(v.Record.State == store.StateVerified || v.Record.State == store.StateDropped)
}

// monthEnd is the end of the month starting at m.
func monthEnd(m time.Time) time.Time { return m.AddDate(0, 1, 0) }

// NeedsFacts reports whether deciding about v needs the partition's
// facts: only a month whose bounds are already past the retention can be
// dropped, and then the data must confirm it.
func NeedsFacts(v MonthView, now time.Time, cfg Config) bool {
	return v.Partition != nil && !monthEnd(v.Month).After(now.Add(-cfg.Retention))
}

// Decide is the life cycle's rule for one month: the next step it needs,
// and why; "" when it needs none now. Called again after each step, it
// walks a month through its states.
//
// A month is archived when it ended more than the hot window ago (its
// bounds are enough: archiving loses nothing and can be undone). It is
// dropped only when its newest row, as the data says, is older than the
// retention, never by its bounds alone, and only with a verified export
// unless DropWithoutExport allows it.
func Decide(v MonthView, now time.Time, cfg Config) (Action, string) {
	p := v.Partition
	if p == nil {
		if v.Record != nil && v.Record.State == store.StateVerified {
			return RecordDropped, "the partition is gone and its export was verified"
		}
		return "", ""
	}
	switch {
	case p.DetachPending || p.Parent == store.AttachedNone:
		return Archive, "a detach was left unfinished"
	case p.Parent == store.AttachedHot:
		if !monthEnd(v.Month).After(now.Add(-cfg.HotWindow)) {
			return Archive, "the month ended more than the hot window ago"
		}
		return "", ""
	}
	// Archived.
	if !v.verified() {
		if pastRetention(v, now, cfg) && cfg.DropWithoutExport {
			return DropUnexported, "past the retention without a verified export, and dropping without export is allowed"
		}
		return Export, "archived without a verified export"
	}
	if pastRetention(v, now, cfg) {
		return Drop, "its newest row is older than the retention, and its export is verified"
	}
	return "", ""
}

// pastRetention: the bounds and the data both say the month's rows are
// all older than the retention.
func pastRetention(v MonthView, now time.Time, cfg Config) bool {
	cutoff := now.Add(-cfg.Retention)
	return !monthEnd(v.Month).After(cutoff) && v.HasFacts && v.Newest.Before(cutoff)
}
