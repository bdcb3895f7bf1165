package pgcluster_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/pgcluster"
)

func TestFindBinariesHonoursPGBIN(t *testing.T) {
	dir, err := pgcluster.FindBinaries()
	require.NoError(t, err, "this machine needs Postgres server binaries for the test suite")
	assert.FileExists(t, dir+"/initdb")
	assert.FileExists(t, dir+"/postgres")

	t.Setenv("PG_BIN", dir)
	got, err := pgcluster.FindBinaries()
	require.NoError(t, err)
	assert.Equal(t, dir, got)

	t.Setenv("PG_BIN", t.TempDir())
	_, err = pgcluster.FindBinaries()
	assert.ErrorContains(t, err, "does not contain initdb and postgres")
}

func TestNewNeedsADataDir(t *testing.T) {
	_, err := pgcluster.New(context.Background(), pgcluster.Options{})
	assert.ErrorContains(t, err, "DataDir is required")
}
