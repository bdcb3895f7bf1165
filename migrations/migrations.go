// Package migrations embeds the goose SQL migrations of every service.
//
// Each service owns one Postgres schema and only ever migrates that schema;
// goose keeps its version table inside it (<schema>.goose_db_version), so the
// three services' migrations never collide even in one database.
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
}

//go:embed profile/*.sql
var profileFiles embed.FS

//go:embed reviewmeta/*.sql
var reviewmetaFiles embed.FS

//go:embed oplog/*.sql
var oplogFiles embed.FS

var (
	// Profile is ProfileService's schema.
	Profile = Set{Schema: "profile", FS: sub(profileFiles, "profile")}
	// ReviewMeta is ReviewMetadataService's schema.
	ReviewMeta = Set{Schema: "reviewmeta", FS: sub(reviewmetaFiles, "reviewmeta")}
	// OpLog is OpLogService's schema.
	OpLog = Set{Schema: "oplog", FS: sub(oplogFiles, "oplog")}
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
