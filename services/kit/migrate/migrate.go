// Package migrate sets up and migrates a service's own schema.
//
// Each service has two roles (README, "Database roles"): an owner role
// that owns the schema and everything in it and runs `migrate`, and a
// runtime role that `serve` connects as, with the DML grants its SQL needs
// and nothing else. No service role may create schemas (no CREATE on the
// database), so an admin creates the roles and the empty schema first:
// Bootstrap, run by `make run`, the test harness and the fault suite (and
// by whatever provisions a real database). Up then applies the goose
// migrations as the owner and grants the runtime role its privileges.
package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/pgcluster"
	"github.com/platforma/platforma/services/kit/pgerr"
)

// VersionTable is where goose records applied migrations, inside the
// service's own schema, so services never share a version table.
func VersionTable(schema string) string { return schema + ".goose_db_version" }

// Up applies every pending migration of set and returns the versions it
// applied, then grants the schema's runtime roles what set.RuntimeGrants
// says (every run, so the grants always match this build). Concurrent
// runs (several replicas starting at once) are serialised by an advisory
// lock per schema. logger may be nil.
//
// dsn connects as the schema's owner role (or a member of it, a
// superuser included: the migrations then run SET ROLE to the owner, so
// the owner owns what they create). The schema must exist (Bootstrap);
// only a role that may create schemas gets one made here, as before roles
// were separated (a single role doing everything, e.g. DATABASE_URL
// against your own server). The runtime roles are the roles the
// bootstrap granted USAGE on the schema; with none, no grants are made.
func Up(ctx context.Context, dsn string, set migrations.Set, logger *slog.Logger) ([]int64, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	lockID := advisoryLockID(set.Schema)
	asRole, err := prepareSchema(ctx, cfg, set.Schema, lockID)
	if err != nil {
		return nil, err
	}
	var opts []stdlib.OptionOpenDB
	if asRole != "" {
		logger.Info("migrating as the schema's owner", "schema", set.Schema, "role", asRole)
		opts = append(opts, stdlib.OptionAfterConnect(func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "SET ROLE "+pgx.Identifier{asRole}.Sanitize())
			return err
		}))
	}
	db := stdlib.OpenDB(*cfg, opts...)
	defer db.Close()

	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, err
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, withoutCreateSchema(set.FS, set.Schema),
		goose.WithTableName(VersionTable(set.Schema)),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(logger),
	)
	if err != nil {
		return nil, fmt.Errorf("load migrations of %s: %w", set.Schema, err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", set.Schema, err)
	}
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}

	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	err = conn.Raw(func(driverConn any) error {
		c := driverConn.(*stdlib.Conn).Conn()
		roles, err := grantRuntime(ctx, c, set, lockID)
		if err == nil && len(roles) > 0 {
			logger.Info("runtime grants applied", "schema", set.Schema, "roles", roles)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("grant %s's runtime role: %w", set.Schema, err)
	}
	return applied, nil
}

// prepareSchema makes sure the schema exists and the connecting role may
// migrate it, under the schema's lock, and returns the role to SET ROLE
// to ("" when the connecting role owns it).
func prepareSchema(ctx context.Context, cfg *pgx.ConnConfig, schema string, lockID int64) (string, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var asRole string
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
			return err
		}
		var owner, user string
		var member bool
		err := tx.QueryRow(ctx, `
SELECT r.rolname, current_user, pg_has_role(current_user, n.nspowner, 'MEMBER')
FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = $1`, schema).Scan(&owner, &user, &member)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// goose keeps its version table in the schema, so it has to
			// exist before goose runs. Only a role with CREATE on the
			// database gets here: in the set-up of README's "Database
			// roles" the bootstrap made it.
			if _, err := tx.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
				if pgerr.Is(err, pgerr.InsufficientPrivilege) {
					return fmt.Errorf("schema %s does not exist, and this role may not create it: an admin creates it and the service's roles first "+
						"(`<service> bootstrap`, which runs migrate.Bootstrap; `make run` and the test harness do): %w", schema, err)
				}
				return fmt.Errorf("create schema %s: %w", schema, err)
			}
			return nil
		case err != nil:
			return err
		case !member:
			return fmt.Errorf("schema %s is owned by role %s, and migrate connects as %s, which is not %s: "+
				"migrate connects as the schema's owner role (the service's runtime role cannot migrate)", schema, owner, user, owner)
		case owner != user:
			asRole = owner
		}
		return nil
	})
	return asRole, err
}

// createSchemaStmt matches migration 0001's CREATE SCHEMA IF NOT EXISTS
// of the schema, on a line of its own.
func createSchemaStmt(schema string) *regexp.Regexp {
	return regexp.MustCompile(`(?im)^[ \t]*CREATE SCHEMA IF NOT EXISTS[ \t]+"?` + regexp.QuoteMeta(schema) + `"?[ \t]*;[ \t]*$`)
}

// withoutCreateSchema serves the migrations of fsys without the statement
// `CREATE SCHEMA IF NOT EXISTS <schema>;`. Every service's migration 0001
// has it, from before roles were separated; when goose runs, the schema
// always exists (prepareSchema), so the statement has nothing to do, but
// Postgres checks CREATE on the database before it looks whether the
// schema exists, and the owner role has no CREATE on the database. The
// files stay as they were applied elsewhere; only this no-op is skipped.
func withoutCreateSchema(fsys fs.FS, schema string) fs.FS {
	return rewriteFS{FS: fsys, stmt: createSchemaStmt(schema), schema: schema}
}

type rewriteFS struct {
	fs.FS
	stmt   *regexp.Regexp
	schema string
}

func (r rewriteFS) Open(name string) (fs.File, error) {
	f, err := r.FS.Open(name)
	if err != nil || !strings.HasSuffix(name, ".sql") {
		return f, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	b = r.stmt.ReplaceAll(b, []byte("-- (CREATE SCHEMA IF NOT EXISTS "+r.schema+": skipped by the migrator, the schema exists)"))
	return &memFile{Reader: bytes.NewReader(b), info: info}, nil
}

type memFile struct {
	*bytes.Reader
	info fs.FileInfo
}

func (m *memFile) Stat() (fs.FileInfo, error) { return m.info, nil }
func (m *memFile) Close() error               { return nil }

// RuntimeRoles are the roles with USAGE on schema other than its owner:
// the runtime roles the bootstrap set up.
func RuntimeRoles(ctx context.Context, conn *pgx.Conn, schema string) ([]string, error) {
	rows, err := conn.Query(ctx, `
SELECT r.rolname
FROM pg_namespace n, aclexplode(n.nspacl) a, pg_roles r
WHERE n.nspname = $1 AND a.privilege_type = 'USAGE' AND a.grantee <> n.nspowner AND r.oid = a.grantee
ORDER BY 1`, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// grantRuntime gives every runtime role of set's schema exactly
// set.RuntimeGrants: everything on the schema's tables, sequences and
// functions is revoked first, in the same transaction, so a privilege
// dropped from the grants file is dropped from the database too.
func grantRuntime(ctx context.Context, conn *pgx.Conn, set migrations.Set, lockID int64) ([]string, error) {
	roles, err := RuntimeRoles(ctx, conn, set.Schema)
	if err != nil || len(roles) == 0 {
		return nil, err
	}
	schema := pgx.Identifier{set.Schema}.Sanitize()
	return roles, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
			return err
		}
		for _, role := range roles {
			r := pgx.Identifier{role}.Sanitize()
			sql := fmt.Sprintf(`REVOKE ALL ON ALL TABLES IN SCHEMA %[1]s FROM %[2]s;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA %[1]s FROM %[2]s;
REVOKE ALL ON ALL ROUTINES IN SCHEMA %[1]s FROM %[2]s;
`, schema, r) + strings.ReplaceAll(set.RuntimeGrants, "{{runtime}}", r)
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("role %s: %w", role, err)
			}
		}
		return nil
	})
}

// Roles are the two roles of one service's schema.
type Roles struct {
	// Owner owns the schema and everything the migrations create in it;
	// `migrate` connects as it. A login role.
	Owner string
	// Runtime is what `serve` connects as: USAGE on the schema and the
	// set's RuntimeGrants, nothing else. A login role.
	Runtime string
}

// DefaultRoles are the roles of schema as `make run`, the test harness and
// the fault suite name them: <schema>_owner and <schema>.
func DefaultRoles(schema string) Roles {
	return Roles{Owner: schema + "_owner", Runtime: schema}
}

// Beginner is an admin connection: a *pgx.Conn or a *pgxpool.Pool.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Bootstrap is what an admin (a superuser) does for one service before its
// first `migrate`, in the database admin is connected to:
//
//   - the database: REVOKE ALL ON DATABASE ... FROM PUBLIC (no CONNECT,
//     CREATE or TEMPORARY for roles not named) and REVOKE CREATE ON SCHEMA
//     public FROM PUBLIC;
//   - the roles: roles.Owner and roles.Runtime, LOGIN, created if missing
//     (without password: setting them is the caller's business); an
//     existing one must be a plain role (no SUPERUSER, CREATEROLE,
//     CREATEDB, REPLICATION, BYPASSRLS), and the runtime role must not be
//     a member of the owner;
//   - the schema: CREATE SCHEMA <schema> AUTHORIZATION <owner>; a schema
//     that exists already must belong to the owner, or to the runtime role
//     (the layout before roles were separated: everything the runtime role
//     owns in this database is then reassigned to the owner); any other
//     owner is refused (someone else created it first);
//   - privileges: CONNECT on the database for both roles and nothing else
//     (TEMPORARY too for the runtime role when set.RuntimeTemp), USAGE on
//     the schema for the runtime role; PUBLIC has nothing on the schema.
//
// It is idempotent and safe to run concurrently (an advisory lock, and a
// retry when two databases of one cluster create the same role at once).
func Bootstrap(ctx context.Context, admin Beginner, set migrations.Set, roles Roles) error {
	if roles.Owner == "" || roles.Runtime == "" || roles.Owner == roles.Runtime {
		return fmt.Errorf("bootstrap %s: need two different roles, got owner %q and runtime %q", set.Schema, roles.Owner, roles.Runtime)
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error { return bootstrap(ctx, tx, set, roles) })
		if !retryable(err) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("bootstrap %s: %w", set.Schema, err)
	}
	return nil
}

// bootstrapLockID serialises every bootstrap of one database.
var bootstrapLockID = advisoryLockID("platforma/bootstrap")

func bootstrap(ctx context.Context, tx pgx.Tx, set migrations.Set, roles Roles) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", bootstrapLockID); err != nil {
		return err
	}
	var dbName string
	if err := tx.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		return err
	}
	schema := pgx.Identifier{set.Schema}.Sanitize()
	owner, runtime := pgx.Identifier{roles.Owner}.Sanitize(), pgx.Identifier{roles.Runtime}.Sanitize()

	exec := func(sql string, args ...any) error {
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	}
	var hasPublic bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')").Scan(&hasPublic); err != nil {
		return err
	}
	if hasPublic {
		if err := exec("REVOKE CREATE ON SCHEMA public FROM PUBLIC"); err != nil {
			return err
		}
	}

	for _, role := range []string{roles.Owner, roles.Runtime} {
		if err := ensureRole(ctx, tx, role); err != nil {
			return err
		}
	}
	var runtimeIsOwner bool
	if err := tx.QueryRow(ctx, "SELECT pg_has_role($1, $2, 'MEMBER')", roles.Runtime, roles.Owner).Scan(&runtimeIsOwner); err != nil {
		return err
	}
	if runtimeIsOwner {
		return fmt.Errorf("role %s is a member of %s: the runtime role must not have the owner's rights (REVOKE %s FROM %s)",
			roles.Runtime, roles.Owner, owner, runtime)
	}

	var current string
	err := tx.QueryRow(ctx, "SELECT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = $1", set.Schema).Scan(&current)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if err := exec("CREATE SCHEMA " + schema + " AUTHORIZATION " + owner); err != nil {
			return err
		}
	case err != nil:
		return err
	case current == roles.Owner:
	case current == roles.Runtime:
		// Before roles were separated the service's one role owned its
		// schema. Its objects here go to the owner; the runtime role gets
		// its grants back from the next migrate.
		if err := exec("REASSIGN OWNED BY " + runtime + " TO " + owner); err != nil {
			return err
		}
	default:
		return fmt.Errorf("schema %s exists and is owned by role %s, not by %s: another role created it; "+
			"check what is in it, then drop it or ALTER SCHEMA %s OWNER TO %s", set.Schema, current, roles.Owner, schema, owner)
	}

	if err := grantDatabase(ctx, tx, dbName, set, roles); err != nil {
		return err
	}
	for _, sql := range []string{
		"REVOKE ALL ON SCHEMA " + schema + " FROM PUBLIC",
		"REVOKE ALL ON SCHEMA " + schema + " FROM " + runtime,
		"GRANT USAGE ON SCHEMA " + schema + " TO " + runtime,
	} {
		if err := exec(sql); err != nil {
			return err
		}
	}
	return nil
}

// GrantDatabase sets the privileges on database dbname that Bootstrap
// sets (PUBLIC: none; the roles: CONNECT, and TEMPORARY for the runtime
// role when set.RuntimeTemp). admin may be connected to any database of
// the cluster. For copies: CREATE DATABASE ... TEMPLATE copies the
// template's schemas with their privileges, but not the privileges on the
// database itself.
func GrantDatabase(ctx context.Context, admin Beginner, dbname string, set migrations.Set, roles Roles) error {
	return pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error { return grantDatabase(ctx, tx, dbname, set, roles) })
}

func grantDatabase(ctx context.Context, tx pgx.Tx, dbname string, set migrations.Set, roles Roles) error {
	database := pgx.Identifier{dbname}.Sanitize()
	owner, runtime := pgx.Identifier{roles.Owner}.Sanitize(), pgx.Identifier{roles.Runtime}.Sanitize()
	runtimePrivileges := "CONNECT"
	if set.RuntimeTemp {
		runtimePrivileges += ", TEMPORARY"
	}
	for _, sql := range []string{
		"REVOKE ALL ON DATABASE " + database + " FROM PUBLIC",
		"REVOKE ALL ON DATABASE " + database + " FROM " + owner + ", " + runtime,
		"GRANT CONNECT ON DATABASE " + database + " TO " + owner,
		"GRANT " + runtimePrivileges + " ON DATABASE " + database + " TO " + runtime,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// ensureRole creates role as a plain login role, or checks that the
// existing one is plain.
func ensureRole(ctx context.Context, tx pgx.Tx, role string) error {
	var super, createRole, createDB, replication, bypassRLS bool
	err := tx.QueryRow(ctx, "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1", role).
		Scan(&super, &createRole, &createDB, &replication, &bypassRLS)
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = tx.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN")
		return err
	}
	if err != nil {
		return err
	}
	var extra []string
	for _, a := range []struct {
		on   bool
		name string
	}{{super, "SUPERUSER"}, {createRole, "CREATEROLE"}, {createDB, "CREATEDB"}, {replication, "REPLICATION"}, {bypassRLS, "BYPASSRLS"}} {
		if a.on {
			extra = append(extra, a.name)
		}
	}
	if len(extra) > 0 {
		return fmt.Errorf("role %s exists with %s: a service's roles must be plain login roles", role, strings.Join(extra, ", "))
	}
	return nil
}

// retryable reports a failure that a concurrent bootstrap in another
// database of the cluster can cause (roles are shared by all databases).
func retryable(err error) bool {
	return pgerr.Is(err, pgerr.DuplicateObject, pgerr.UniqueViolation, pgerr.SerializationFailure, pgerr.DeadlockDetected) ||
		pgerr.ConcurrentCatalogUpdate(err)
}

// advisoryLockID derives a stable lock id per schema, so migrating
// different services at the same time does not serialise them.
func advisoryLockID(schema string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("platforma/migrate/" + schema))
	return int64(h.Sum64() >> 1)
}

// Execer runs a statement: a *pgx.Conn, a *pgxpool.Pool or a pgx.Tx.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SetPassword gives role a login password, sent as a scram-sha-256
// verifier computed here: the password itself never reaches the server,
// its logs or pg_stat_statements. password must be ASCII.
func SetPassword(ctx context.Context, admin Execer, role, password string) error {
	if password == "" {
		return fmt.Errorf("set the password of %s: the password is empty", role)
	}
	verifier, err := pgcluster.ScramVerifier(password)
	if err != nil {
		return fmt.Errorf("set the password of %s: %w", role, err)
	}
	// ALTER ROLE takes no parameters; the verifier is base64 and '$', so
	// quoting it as a literal is safe.
	if _, err := admin.Exec(ctx, "ALTER ROLE "+pgx.Identifier{role}.Sanitize()+" PASSWORD '"+verifier+"'"); err != nil {
		return fmt.Errorf("set the password of %s: %w", role, err)
	}
	return nil
}
