// Package migrations embeds the goose SQL migrations of every service, and
// what each service's runtime role may do with what they create.
//
// Each service owns one Postgres schema and only ever migrates that schema;
// goose keeps its version table inside it (<schema>.goose_db_version), so the
// three services' migrations never collide even in one database. The
// migrations run as the schema's owner role; the service serves as a
// runtime role that gets only the grants in grants/<service>.sql (README,
// "Database roles").
package migrations

import (
	"embed"
	"io/fs"
)

// Set is the migrations of one service and the schema they own.
type Set struct {
	// Schema is the Postgres schema the migrations create and own.
	Schema string
	// FS holds the NNNN_name.sql files at its root.
	FS fs.FS
	// RuntimeGrants is SQL of GRANT statements on the schema's objects,
	// for the service's runtime role, written {{runtime}}: what the
	// service's own SQL needs. The migrator applies it after every run.
	RuntimeGrants string
	// RuntimeTemp says the runtime role creates temporary tables
	// (TEMPORARY on the database, granted by the bootstrap).
	RuntimeTemp bool
}

//go:embed profile/*.sql
var profileFiles embed.FS

//go:embed reviewmeta/*.sql
var reviewmetaFiles embed.FS

//go:embed oplog/*.sql
var oplogFiles embed.FS

var (
	//go:embed grants/profile.sql
	profileGrants string
	//go:embed grants/reviewmeta.sql
	reviewmetaGrants string
	//go:embed grants/oplog.sql
	oplogGrants string
)

var (
	// Profile is ProfileService's schema.
	Profile = Set{Schema: "profile", FS: sub(profileFiles, "profile"), RuntimeGrants: profileGrants}
	// ReviewMeta is ReviewMetadataService's schema.
	ReviewMeta = Set{Schema: "reviewmeta", FS: sub(reviewmetaFiles, "reviewmeta"), RuntimeGrants: reviewmetaGrants}
	// OpLog is OpLogService's schema. Its runtime role creates a temporary
	// staging table when a batch repeats rows it already stored
	// (services/oplog/internal/store, WriteRows).
	OpLog = Set{Schema: "oplog", FS: sub(oplogFiles, "oplog"), RuntimeGrants: oplogGrants, RuntimeTemp: true}
)

// All lists every service's migrations, for tools that set up a whole
// database (tests of cross-service flows, the local stack).
var All = []Set{Profile, ReviewMeta, OpLog}

func sub(files embed.FS, dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		// fs.Sub only fails for an invalid path, which is a constant here.
		panic(err)
	}
	return f
}
