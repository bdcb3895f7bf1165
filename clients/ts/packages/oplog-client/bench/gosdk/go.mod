// The Go SDK's side of `make bench-ts`: the same load as bench.mjs, from
// services/oplog/oplogclient. Built in a workspace bench.mjs writes (this
// module plus go.work's), so it is no module of the repository's own
// workspace and `make test` never builds it.
module github.com/platforma/platforma/clients/ts/bench/gosdk

go 1.26.0

require github.com/platforma/platforma/services/oplog v0.0.0

replace github.com/platforma/platforma/services/oplog => ../../../../../../services/oplog
