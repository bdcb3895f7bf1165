package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgtest"
)

// The tests here check the database set-up of README's "Database roles":
// every service bootstrapped and migrated in one database, each service's
// two roles confined to what its own SQL needs.

func needRoles(t *testing.T) {
	t.Helper()
	if !pgtest.HasRoles(t) {
		t.Skip("needs the services' roles: the test harness's own cluster (unset DATABASE_URL)")
	}
}

// stack is a database with all three services bootstrapped (the
// harness's template) and migrated by their owner roles, as `make run`
// sets it up. It returns the superuser's DSN.
func stack(t *testing.T) string {
	t.Helper()
	needRoles(t)
	dsn := pgtest.NewDatabase(t)
	for _, set := range migrations.All {
		_, err := migrate.Up(context.Background(), pgtest.AsRole(dsn, migrate.DefaultRoles(set.Schema).Owner), set, nil)
		require.NoError(t, err, set.Schema)
	}
	return dsn
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// denied runs sql and requires Postgres to refuse it for lack of
// privilege (42501).
func denied(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	_, err := conn.Exec(context.Background(), sql)
	if assert.Error(t, err, "%s as %s must be refused", sql, conn.Config().User) {
		assert.Equal(t, "42501", code(err), "%s as %s: %v", sql, conn.Config().User, err)
	}
}

type table struct{ name, column string }

// tables lists schema's tables (partitioned ones and their partitions
// included) with a column of each.
func tables(t *testing.T, admin *pgx.Conn, schema string) []table {
	t.Helper()
	rows, err := admin.Query(context.Background(), `
SELECT format('%I.%I', n.nspname, c.relname), (SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = c.oid AND attnum = 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`, schema)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var tb table
		return tb, r.Scan(&tb.name, &tb.column)
	})
	require.NoError(t, err)
	require.NotEmpty(t, out, schema)
	return out
}

// A service's roles, runtime and owner alike, can neither read nor write
// another service's tables, nor create anything in its schema, nor create
// a schema or a table in public; the runtime role cannot change or drop
// its own tables either.
func TestServicesCannotTouchEachOthersSchemas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := stack(t)
	admin := connect(t, dsn)
	// A partition, so partitions are covered too.
	_, err := admin.Exec(ctx, "SELECT oplog.create_operation_logs_partition(date_trunc('month', now())::date)")
	require.NoError(t, err)

	for _, set := range migrations.All {
		roles := migrate.DefaultRoles(set.Schema)
		for _, role := range []string{roles.Runtime, roles.Owner} {
			// Not parallel: the subtests share admin, a *pgx.Conn.
			t.Run(role, func(t *testing.T) {
				conn := connect(t, pgtest.AsRole(dsn, role))
				for _, other := range migrations.All {
					if other.Schema == set.Schema {
						continue
					}
					for _, tb := range tables(t, admin, other.Schema) {
						denied(t, conn, "SELECT * FROM "+tb.name+" LIMIT 1")
						denied(t, conn, "INSERT INTO "+tb.name+" DEFAULT VALUES")
						denied(t, conn, "UPDATE "+tb.name+" SET "+tb.column+" = "+tb.column)
						denied(t, conn, "DELETE FROM "+tb.name)
						denied(t, conn, "TRUNCATE "+tb.name)
						denied(t, conn, "DROP TABLE "+tb.name)
					}
					denied(t, conn, "CREATE TABLE "+other.Schema+".squatter (x int)")
					denied(t, conn, "CREATE FUNCTION "+other.Schema+".squatter() RETURNS int LANGUAGE sql RETURN 1")
				}
				if set.Schema != "oplog" {
					denied(t, conn, "SELECT oplog.create_operation_logs_partition('2026-01-01')")
				}
				denied(t, conn, "CREATE SCHEMA squatter")
				denied(t, conn, "CREATE TABLE public.squatter (x int)")
				denied(t, conn, "CREATE TABLE squatter (x int)")
				if role == roles.Runtime {
					for _, tb := range tables(t, admin, set.Schema) {
						denied(t, conn, "DROP TABLE "+tb.name)
						denied(t, conn, "ALTER TABLE "+tb.name+" ADD COLUMN squatter int")
						denied(t, conn, "TRUNCATE "+tb.name)
						denied(t, conn, "CREATE INDEX ON "+tb.name+" ("+tb.column+")")
						denied(t, conn, "CREATE TRIGGER squatter BEFORE INSERT ON "+tb.name+" FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()")
					}
					denied(t, conn, "CREATE TABLE "+set.Schema+".squatter (x int)")
					denied(t, conn, "CREATE VIEW "+set.Schema+".squatter AS SELECT 1")
					denied(t, conn, "DROP SCHEMA "+set.Schema+" CASCADE")
					denied(t, conn, "SELECT * FROM "+migrate.VersionTable(set.Schema))
				}
				// Temporary tables: only OpLogService's runtime role, for
				// its staging table.
				_, err := conn.Exec(ctx, "CREATE TEMP TABLE scratch (x int)")
				if role == migrate.DefaultRoles("oplog").Runtime {
					assert.NoError(t, err)
				} else {
					assert.Equal(t, "42501", code(err), "%s: CREATE TEMP TABLE: %v", role, err)
				}
			})
		}
	}
}

// What each runtime role may do is exactly migrations/grants/<service>.sql:
// DML on the tables its SQL uses (no TRUNCATE, REFERENCES or TRIGGER),
// EXECUTE on the functions it calls, nothing on partitions or goose's
// table; the owner roles have no grants on anything of another schema.
func TestRuntimeGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := stack(t)
	admin := connect(t, dsn)
	_, err := admin.Exec(ctx, "SELECT oplog.create_operation_logs_partition(date_trunc('month', now())::date)")
	require.NoError(t, err)

	grants := func(role string) map[string]string {
		rows, err := admin.Query(ctx, `
SELECT obj, string_agg(privilege_type, ',' ORDER BY privilege_type) FROM (
	SELECT format('%I.%I', n.nspname, c.relname) AS obj, a.privilege_type
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
	WHERE a.grantee = $1::regrole AND c.relowner <> $1::regrole
	UNION ALL
	SELECT p.oid::regprocedure::text, a.privilege_type
	FROM pg_proc p, aclexplode(p.proacl) a WHERE a.grantee = $1::regrole AND p.proowner <> $1::regrole
	UNION ALL
	SELECT 'schema ' || n.nspname, a.privilege_type
	FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = $1::regrole AND n.nspowner <> $1::regrole
) g GROUP BY obj`, role)
		require.NoError(t, err)
		out := map[string]string{}
		for rows.Next() {
			var obj, privs string
			require.NoError(t, rows.Scan(&obj, &privs))
			out[obj] = privs
		}
		require.NoError(t, rows.Err())
		return out
	}
	const s, si, sid, siu, siud = "SELECT", "INSERT,SELECT", "DELETE,INSERT,SELECT", "INSERT,SELECT,UPDATE", "DELETE,INSERT,SELECT,UPDATE"
	assert.Equal(t, map[string]string{
		"schema profile":                                        "USAGE",
		"profile.profiles":                                      siu,
		"profile.login_events":                                  sid,
		"profile.profile_transitions":                           sid,
		"profile.transition_watermark":                          "SELECT,UPDATE",
		"profile.merge_logins(profile.login[],profile.login[])": "EXECUTE",
		"profile.grade_floor(integer)":                          "EXECUTE",
		"profile.grade_ceiling(integer)":                        "EXECUTE",
	}, grants("profile"))
	assert.Equal(t, map[string]string{
		"schema reviewmeta":          "USAGE",
		"reviewmeta.review_types":    s,
		"reviewmeta.review_metadata": siu,
		"reviewmeta.reply_attempts":  si,
	}, grants("reviewmeta"))
	assert.Equal(t, map[string]string{
		"schema oplog":                                "USAGE",
		"oplog.operation_logs":                        si,
		"oplog.operation_stats_hourly":                siu,
		"oplog.operation_stats_daily":                 siu,
		"oplog.proxy_stats_hourly":                    siu,
		"oplog.proxy_stats_daily":                     siu,
		"oplog.operation_counts_hourly":               siu,
		"oplog.login_outbox":                          sid,
		"oplog.login_dead_letters":                    siud,
		"oplog.create_operation_logs_partition(date)": "EXECUTE",
		"oplog.operation_logs_archive":                s,
		"oplog.lifecycle_months":                      s,
		"oplog.lifecycle_steps":                       s,
	}, grants("oplog"))
	for _, set := range migrations.All {
		assert.Empty(t, grants(migrate.DefaultRoles(set.Schema).Owner), "%s: owns its schema, granted nothing else", set.Schema)
	}
	var publicExecute bool
	require.NoError(t, admin.QueryRow(ctx, "SELECT has_function_privilege('public', 'oplog.create_operation_logs_partition(date)', 'EXECUTE')").Scan(&publicExecute))
	assert.False(t, publicExecute, "PUBLIC may not create partitions")

	// Every migrate converges on the file: a privilege granted by hand is
	// gone after the next run.
	_, err = admin.Exec(ctx, "GRANT TRUNCATE, TRIGGER ON profile.profiles TO profile; GRANT SELECT ON profile.goose_db_version TO profile")
	require.NoError(t, err)
	_, err = migrate.Up(ctx, pgtest.AsRole(dsn, "profile_owner"), migrations.Profile, nil)
	require.NoError(t, err)
	assert.Equal(t, siu, grants("profile")["profile.profiles"])
	assert.NotContains(t, grants("profile"), "profile.goose_db_version")
}

// Nobody but the roles of the services gets into the database, and no
// role of theirs may create a schema: PUBLIC has no privilege on the
// database, nor CREATE on schema public. Also in the copies the test
// harness hands out.
func TestDatabaseGivesPublicNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, dsn := range map[string]string{"migrated": stack(t), "template copy": pgtest.NewDatabase(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			admin := connect(t, dsn)
			var publicDB, publicSchema []string
			require.NoError(t, admin.QueryRow(ctx, `
SELECT coalesce((SELECT array_agg(a.privilege_type) FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() AND a.grantee = 0), '{}'),
	coalesce((SELECT array_agg(a.privilege_type) FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'), '{}')`).
				Scan(&publicDB, &publicSchema))
			assert.Empty(t, publicDB, "PUBLIC's privileges on the database")
			assert.Empty(t, publicSchema, "PUBLIC's CREATE on schema public")

			privileged := func(privilege string) []string {
				rows, err := admin.Query(ctx, `SELECT rolname FROM pg_roles WHERE NOT rolsuper AND rolname NOT LIKE 'pg\_%'
					AND has_database_privilege(oid, current_database(), $1) ORDER BY 1`, privilege)
				require.NoError(t, err)
				names, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				return names
			}
			assert.Empty(t, privileged("CREATE"), "roles that may create schemas")
			assert.Equal(t, []string{"oplog"}, privileged("TEMPORARY"), "roles that may create temporary tables")
			var connect []string
			for _, set := range migrations.All {
				r := migrate.DefaultRoles(set.Schema)
				connect = append(connect, r.Owner, r.Runtime)
			}
			sort.Strings(connect)
			assert.Subset(t, privileged("CONNECT"), connect)
			for _, role := range privileged("CONNECT") {
				assert.Contains(t, append(connect, "pgtest_fixture", "pgtest_fixture_owner"), role)
			}
		})
	}

	// A role nobody granted anything cannot even connect.
	admin := connect(t, pgtest.NewDatabase(t))
	_, err := admin.Exec(ctx, "CREATE ROLE pgt_stranger LOGIN")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE pgt_stranger") })
	_, err = pgx.Connect(ctx, pgtest.AsRole(admin.Config().ConnString(), "pgt_stranger"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "permission denied for database")
}

// No service can take another's schema name before its owner is set up:
// with profile bootstrapped and oplog not yet, neither of profile's roles
// can create schema oplog, and oplog's migrate, without the bootstrap,
// says what is missing. A schema someone else created first is refused by
// the bootstrap and by migrate, never adopted.
func TestSchemaCannotBeSquattedBeforeItsOwnerMigrates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	needRoles(t)
	dsn := pgtest.NewBlankDatabase(t)
	admin := connect(t, dsn)
	require.NoError(t, migrate.Bootstrap(ctx, admin, migrations.Profile, migrate.DefaultRoles("profile")))

	for _, role := range []string{"profile", "profile_owner"} {
		conn := connect(t, pgtest.AsRole(dsn, role))
		denied(t, conn, "CREATE SCHEMA oplog")
		denied(t, conn, "CREATE SCHEMA IF NOT EXISTS oplog")
		denied(t, conn, "CREATE SCHEMA reviewmeta AUTHORIZATION "+role)
	}
	// Roles of services not bootstrapped here may not even connect.
	_, err := pgx.Connect(ctx, pgtest.AsRole(dsn, "oplog_owner"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "permission denied for database")

	_, err = migrate.Up(ctx, dsn, migrations.Profile, nil)
	require.NoError(t, err, "profile: bootstrapped, migrates (here as the superuser, SET ROLE to the owner)")
	var owner string
	require.NoError(t, admin.QueryRow(ctx, "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'profile.profiles'::regclass").Scan(&owner))
	assert.Equal(t, "profile_owner", owner, "a superuser's migrate leaves the objects to the schema's owner")

	require.NoError(t, migrate.Bootstrap(ctx, admin, migrations.OpLog, migrate.DefaultRoles("oplog")))
	_, err = migrate.Up(ctx, pgtest.AsRole(dsn, "oplog_owner"), migrations.OpLog, nil)
	require.NoError(t, err)
	_, err = migrate.Up(ctx, pgtest.AsRole(dsn, "oplog"), migrations.OpLog, nil)
	require.Error(t, err, "the runtime role cannot migrate")
	assert.Contains(t, err.Error(), "owned by role oplog_owner")

	// reviewmeta: its owner exists (other databases of the cluster have
	// it) but nothing here was set up for it.
	_, err = admin.Exec(ctx, "GRANT CONNECT ON DATABASE "+pgx.Identifier{admin.Config().Database}.Sanitize()+" TO reviewmeta_owner")
	require.NoError(t, err)
	_, err = migrate.Up(ctx, pgtest.AsRole(dsn, "reviewmeta_owner"), migrations.ReviewMeta, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "may not create it")
	assert.Contains(t, err.Error(), "Bootstrap")

	// Had someone created it first (here the superuser, for profile's
	// role), neither the bootstrap nor migrate adopt it.
	_, err = admin.Exec(ctx, "CREATE SCHEMA reviewmeta AUTHORIZATION profile")
	require.NoError(t, err)
	err = migrate.Bootstrap(ctx, admin, migrations.ReviewMeta, migrate.DefaultRoles("reviewmeta"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "owned by role profile, not by reviewmeta_owner")
	_, err = migrate.Up(ctx, pgtest.AsRole(dsn, "reviewmeta_owner"), migrations.ReviewMeta, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "owned by role profile")
}

// A database set up before roles were separated (the service's one role
// with CREATE on the database, owning its schema) is taken over by the
// bootstrap: the owner role gets the schema and its objects, the old role
// becomes the runtime role with its grants, and loses CREATE.
func TestBootstrapAdoptsTheLayoutBeforeRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	needRoles(t)
	dsn := pgtest.NewBlankDatabase(t)
	admin := connect(t, dsn)
	db := pgx.Identifier{admin.Config().Database}.Sanitize()
	_, err := admin.Exec(ctx, "GRANT CONNECT, CREATE ON DATABASE "+db+" TO profile")
	require.NoError(t, err)
	_, err = migrate.Up(ctx, pgtest.AsRole(dsn, "profile"), migrations.Profile, nil)
	require.NoError(t, err, "the old layout: the service's role creates and owns its schema")

	require.NoError(t, migrate.Bootstrap(ctx, admin, migrations.Profile, migrate.DefaultRoles("profile")))
	_, err = migrate.Up(ctx, pgtest.AsRole(dsn, "profile_owner"), migrations.Profile, nil)
	require.NoError(t, err)

	var owners []string
	require.NoError(t, admin.QueryRow(ctx, `SELECT array_agg(DISTINCT relowner::regrole::text) FROM pg_class WHERE relnamespace = 'profile'::regnamespace`).Scan(&owners))
	assert.Equal(t, []string{"profile_owner"}, owners)
	conn := connect(t, pgtest.AsRole(dsn, "profile"))
	_, err = conn.Exec(ctx, "SELECT count(*) FROM profile.profiles")
	assert.NoError(t, err)
	denied(t, conn, "CREATE SCHEMA squatter")
	denied(t, conn, "CREATE TABLE profile.squatter (x int)")
}

// Bootstraps run concurrently (replicas of a job, several databases of one
// cluster creating the same new roles) all succeed, and a second run
// changes nothing.
func TestBootstrapIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	needRoles(t)
	set := migrations.Set{Schema: "race", FS: fstest.MapFS{
		"0001_things.sql": {Data: []byte("-- +goose Up\nCREATE TABLE race.things (id int PRIMARY KEY);\n-- +goose Down\nDROP TABLE race.things;\n")},
	}, RuntimeGrants: "GRANT SELECT ON race.things TO {{runtime}};\n"}
	roles := migrate.Roles{Owner: "pgt_race_owner", Runtime: "pgt_race"}
	// Registered first, so it runs after the databases are dropped.
	cleanupAdmin := connect(t, pgtest.NewDatabase(t))
	t.Cleanup(func() {
		_, _ = cleanupAdmin.Exec(context.Background(), "DROP ROLE IF EXISTS pgt_race; DROP ROLE IF EXISTS pgt_race_owner")
	})

	dsns := []string{pgtest.NewBlankDatabase(t), pgtest.NewBlankDatabase(t)}
	all := append([]migrations.Set{set}, migrations.All...)
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(dsns)*len(all))
	for range 2 {
		for _, dsn := range dsns {
			for _, s := range all {
				r := roles
				if s.Schema != set.Schema {
					r = migrate.DefaultRoles(s.Schema)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := pgx.Connect(ctx, dsn)
					if err != nil {
						errs <- err
						return
					}
					defer conn.Close(ctx)
					if err := migrate.Bootstrap(ctx, conn, s, r); err != nil {
						errs <- fmt.Errorf("%s: %w", s.Schema, err)
					}
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, dsn := range dsns {
		admin := connect(t, dsn)
		require.NoError(t, migrate.Bootstrap(ctx, admin, set, roles), "again")
		_, err := migrate.Up(ctx, pgtest.AsRole(dsn, roles.Owner), set, nil)
		require.NoError(t, err)
		conn := connect(t, pgtest.AsRole(dsn, roles.Runtime))
		_, err = conn.Exec(ctx, "SELECT * FROM race.things")
		assert.NoError(t, err)
		denied(t, conn, "INSERT INTO race.things VALUES (1)")
		var schemas []string
		require.NoError(t, admin.QueryRow(ctx, `SELECT array_agg(nspname || ':' || nspowner::regrole::text ORDER BY nspname) FROM pg_namespace
			WHERE nspname IN ('race', 'profile', 'reviewmeta', 'oplog')`).Scan(&schemas))
		assert.Equal(t, []string{"oplog:oplog_owner", "profile:profile_owner", "race:pgt_race_owner", "reviewmeta:reviewmeta_owner"}, schemas)
	}
}
