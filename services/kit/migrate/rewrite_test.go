package migrate

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
)

// The owner role has no CREATE on the database, and Postgres checks it
// even for a CREATE SCHEMA IF NOT EXISTS of a schema that exists: the
// migrator skips that one statement of migration 0001 and changes
// nothing else of any migration.
func TestOnlyMigration0001sCreateSchemaIsSkipped(t *testing.T) {
	t.Parallel()
	for _, set := range migrations.All {
		files, err := fs.Glob(set.FS, "*.sql")
		require.NoError(t, err)
		require.NotEmpty(t, files)
		rewritten := withoutCreateSchema(set.FS, set.Schema)
		got, err := fs.Glob(rewritten, "*.sql")
		require.NoError(t, err)
		assert.Equal(t, files, got)
		for _, name := range files {
			orig, err := fs.ReadFile(set.FS, name)
			require.NoError(t, err)
			b, err := fs.ReadFile(rewritten, name)
			require.NoError(t, err)
			if !strings.HasPrefix(name, "0001_") {
				assert.Equal(t, string(orig), string(b), "%s/%s", set.Schema, name)
				continue
			}
			before, after := strings.Split(string(orig), "\n"), strings.Split(string(b), "\n")
			require.Equal(t, len(before), len(after))
			var changed []string
			for i := range before {
				if before[i] != after[i] {
					changed = append(changed, before[i])
				}
			}
			assert.Equal(t, []string{"CREATE SCHEMA IF NOT EXISTS " + set.Schema + ";"}, changed, "%s/%s", set.Schema, name)
		}
	}
}
