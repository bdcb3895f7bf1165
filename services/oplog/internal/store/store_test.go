package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestWindowSplitsIntoDaysAndEdges(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15", s)
		if err != nil {
			panic(err)
		}
		return v
	}
	for _, tc := range []struct {
		since, until     string
		dayFrom, dayTo   string
		wholeDaysInRange bool
	}{
		{"2026-11-01 00", "2026-11-08 00", "2026-11-01 00", "2026-11-08 00", true},
		{"2026-11-01 07", "2026-11-08 05", "2026-11-02 00", "2026-11-08 00", true},
		{"2026-11-01 07", "2026-11-02 05", "2026-11-02 05", "2026-11-02 05", false}, // no whole day
		{"2026-11-01 07", "2026-11-01 09", "2026-11-01 09", "2026-11-01 09", false},
		{"2026-11-01 00", "2026-11-02 00", "2026-11-01 00", "2026-11-02 00", true},
	} {
		from, to := Window{Since: at(tc.since), Until: at(tc.until)}.split()
		assert.Equal(t, at(tc.dayFrom), from, "%s – %s", tc.since, tc.until)
		assert.Equal(t, at(tc.dayTo), to, "%s – %s", tc.since, tc.until)
	}
}
