package lifecycle

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/platforma/platforma/services/oplog/internal/store"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 15, 3, 30, 0, 0, time.UTC)
	cfg := Config{HotWindow: 90 * 24 * time.Hour, Retention: 730 * 24 * time.Hour}
	month := func(y int, m time.Month) time.Time { return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC) }
	part := func(m time.Time, parent string) *store.MonthPartition {
		return &store.MonthPartition{Month: m, Name: store.PartitionName(m), Parent: parent}
	}
	id := "0193a0c2-0000-7000-8000-000000000001"
	rec := func(m time.Time, state string) *store.Month {
		r := &store.Month{Month: m, State: state}
		if state == store.StateVerified || state == store.StateExported || state == store.StateDropped {
			r.ExportID = &id
		}
		return r
	}
	old := month(2024, 10) // ended 2024-11-01, more than 730 days before now
	tests := []struct {
		name string
		view MonthView
		cfg  func(*Config)
		want Action
	}{
		{"a recent hot month stays", MonthView{Month: month(2026, 10), Partition: part(month(2026, 10), store.AttachedHot)}, nil, ""},
		{"hot, ended 90 days ago exactly: archive", MonthView{Month: month(2026, 8), Partition: part(month(2026, 8), store.AttachedHot)},
			func(c *Config) { c.HotWindow = now.Sub(month(2026, 9)) }, Archive},
		{"hot, ended within the hot window", MonthView{Month: month(2026, 9), Partition: part(month(2026, 9), store.AttachedHot)}, nil, ""},
		{"hot, past the hot window", MonthView{Month: month(2026, 8), Partition: part(month(2026, 8), store.AttachedHot)}, nil, Archive},
		{"detached by a crashed run", MonthView{Month: month(2026, 1), Partition: part(month(2026, 1), store.AttachedNone)}, nil, Archive},
		{"detach left pending", MonthView{Month: month(2026, 1), Partition: &store.MonthPartition{Month: month(2026, 1), Parent: store.AttachedHot, DetachPending: true}}, nil, Archive},
		{"archived, not exported", MonthView{Month: month(2026, 1), Partition: part(month(2026, 1), store.AttachedArchive), Record: rec(month(2026, 1), store.StateArchived)}, nil, Export},
		{"archived, exported but not verified", MonthView{Month: month(2026, 1), Partition: part(month(2026, 1), store.AttachedArchive), Record: rec(month(2026, 1), store.StateExported)}, nil, Export},
		{"archived and verified, within the retention", MonthView{Month: month(2026, 1), Partition: part(month(2026, 1), store.AttachedArchive), Record: rec(month(2026, 1), store.StateVerified)}, nil, ""},
		{"verified, past the retention by bounds and data: drop",
			MonthView{Month: old, Partition: part(old, store.AttachedArchive), Record: rec(old, store.StateVerified), HasFacts: true, Newest: old.Add(24 * time.Hour)}, nil, Drop},
		{"verified, old bounds but a recent row: kept",
			MonthView{Month: old, Partition: part(old, store.AttachedArchive), Record: rec(old, store.StateVerified), HasFacts: true, Newest: now.Add(-24 * time.Hour)}, nil, ""},
		{"verified, facts not read: kept",
			MonthView{Month: old, Partition: part(old, store.AttachedArchive), Record: rec(old, store.StateVerified)}, nil, ""},
		{"empty old partition, verified: drop",
			MonthView{Month: old, Partition: part(old, store.AttachedArchive), Record: rec(old, store.StateVerified), HasFacts: true}, nil, Drop},
		{"past the retention, no export: export first",
			MonthView{Month: old, Partition: part(old, store.AttachedArchive), Record: rec(old, store.StateArchived), HasFacts: true, Newest: old}, nil, Export},
		{"past the retention, no export, dropping without export allowed",
			MonthView{Month: old, Partition: part(old, store.AttachedArchive), Record: rec(old, store.StateArchived), HasFacts: true, Newest: old},
			func(c *Config) { c.DropWithoutExport = true }, DropUnexported},
		{"no export, a recent row, dropping without export allowed: export",
			MonthView{Month: old, Partition: part(old, store.AttachedArchive), HasFacts: true, Newest: now},
			func(c *Config) { c.DropWithoutExport = true }, Export},
		{"partition gone after a verified export: record the drop", MonthView{Month: old, Record: rec(old, store.StateVerified)}, nil, RecordDropped},
		{"dropped and recorded", MonthView{Month: old, Record: rec(old, store.StateDropped)}, nil, ""},
		{"no partition, never exported: nothing to do", MonthView{Month: old, Record: rec(old, store.StateArchived)}, nil, ""},
	}
	for _, tt := range tests {
		c := cfg
		if tt.cfg != nil {
			tt.cfg(&c)
		}
		got, why := Decide(tt.view, now, c)
		assert.Equal(t, tt.want, got, tt.name)
		if got != "" {
			assert.NotEmpty(t, why, tt.name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{HotWindow: DefaultHotWindow, Retention: DefaultRetention, RollupRetention: DefaultRollupRetention, RunAt: "03:30"}
	backfill := 35 * 24 * time.Hour
	assert.NoError(t, ok.Validate(backfill))
	for _, tt := range []struct {
		change  func(*Config)
		problem string
	}{
		{func(c *Config) { c.HotWindow = 30 * 24 * time.Hour }, "LIFECYCLE_HOT_WINDOW"},
		{func(c *Config) { c.HotWindow = backfill }, "must be longer than BACKFILL_WINDOW"},
		{func(c *Config) { c.Retention = c.HotWindow }, "LIFECYCLE_RETENTION"},
		{func(c *Config) { c.RollupRetention = c.Retention - time.Hour }, "LIFECYCLE_ROLLUP_RETENTION"},
		{func(c *Config) { c.RunAt = "3pm" }, "LIFECYCLE_RUN_AT"},
		{func(c *Config) { c.DatabaseURL = "postgres://x" }, "LIFECYCLE_STORE"},
		{func(c *Config) { c.ExportRate = -1 }, "LIFECYCLE_EXPORT_RATE"},
	} {
		c := ok
		tt.change(&c)
		assert.ErrorContains(t, c.Validate(backfill), tt.problem)
	}
	c := ok
	c.RollupRetention = 0
	assert.NoError(t, c.Validate(backfill), "0 keeps statistics forever")
}

func TestNextRun(t *testing.T) {
	t.Parallel()
	c := Config{RunAt: "03:30"}
	at := func(h, m int) time.Time { return time.Date(2026, 12, 3, h, m, 0, 0, time.UTC) }
	assert.Equal(t, at(3, 30), c.NextRun(at(1, 0)))
	assert.Equal(t, at(3, 30).Add(24*time.Hour), c.NextRun(at(3, 30)), "not the same instant again")
	assert.Equal(t, at(3, 30).Add(24*time.Hour), c.NextRun(at(22, 0)))
}
