// Package coldstore is the cold-storage format of oplog.operation_logs:
// a month of rows exported as Parquet files in a blob bucket (a local
// directory or an S3-compatible bucket, through gocloud.dev/blob), with a
// manifest per export, read-back verification and streaming reads for a
// restore.
//
// # Layout
//
//	operation_logs/<YYYY-MM>/<export id>/part-00000.parquet
//	operation_logs/<YYYY-MM>/<export id>/part-00001.parquet
//	...
//	operation_logs/<YYYY-MM>/<export id>/manifest.json
//
// The month is the UTC month of create_time (the table's partitioning).
// manifest.json is written last: an export without one is incomplete and
// is ignored by Exports; Delete removes it first. A month may hold several
// exports (a retried or repeated export gets a new id); the lifecycle
// decides which one counts.
//
// # Parquet schema, version 2 (SchemaVersion)
//
// One column per table column, in table order, all of the table's
// nullability; SCHEMA.md beside this file has the full table. In short:
// uuids are FIXED_LEN_BYTE_ARRAY(16) with the UUID logical type;
// create_time is INT64 TIMESTAMP(MICROS, isAdjustedToUTC=true); smallint
// and integer are INT32 with INT(16)/INT(32) logical types, bigint INT64;
// text is BYTE_ARRAY STRING; jsonb is BYTE_ARRAY JSON holding the value's
// text as Postgres renders jsonb::text. Pages are zstd-compressed; rows are
// in the order of the month's pages in Postgres (version 1: sorted by
// (create_time, id) within and across files). Each file's
// key/value metadata carries platforma.coldstore.schema_version, .export_id,
// .month and .part.
//
// # Manifest
//
// manifest.json (Manifest) holds the schema version, export id, month,
// row count, min and max create_time, the Digest of all rows and, per
// file, its name, rows, bytes and SHA-256. Read and Verify check every one
// of them; Digest lets the lifecycle compare an export with the rows still
// in Postgres without trusting the files' own metadata.
package coldstore
