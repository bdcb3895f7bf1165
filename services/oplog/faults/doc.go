//go:build faults

// Package faults is the fault-injection suite of OpLogService (`make
// test-faults`): the built binaries (bin/oplog, bin/profile) run as child
// processes against a throwaway Postgres cluster while SDK producers log
// entries with known keys, and each test breaks something on purpose —
// kill -9 of a service, a Postgres restart, a SIGTERM, acknowledgements
// lost in transit, the database down under load, ProfileService down while
// the login outbox fills, OpLogService killed between a relay delivery and
// its delete, the database down for a minute under SDK clients with a disk
// spool, a worker with a spool killed with -9, replicas of both services
// with one of each killed, the op log on a cluster of its own, and (with
// Patroni, `make test-ha`) the database's leader killed — then checks, entry by entry, what the README promises:
// nothing acknowledged is missing, nothing is stored twice, the SDK's
// counters account for every entry, memory stays bounded, and every stored
// login is counted once in its profile.
//
// Every file carries the build tag `faults`, so `make test` (and `go vet
// ./...` in `make lint`) never compile it. Run it with
//
//	make test-faults
//
// which builds the binaries first. The binaries are found in $FAULTS_BIN
// (a directory), else in bin/ at the repository root.
//
// How the suite knows each entry's fate: every entry carries a producer key
// ("faults-p<producer>-<seq>") in resource_id. The SDK stamps ids itself and
// reports acknowledgements only as counts, so the suite reads them off the
// wire: a gRPC stream interceptor on the SDK's connection decodes every
// Ingest message it sends (id and key of each row) and, when the server's
// answer arrives, marks those rows acknowledged. That is exactly when the
// SDK counts them (Stats().Acknowledged). Entries never acknowledged were
// dropped by the SDK's bounded buffer or failed, or lost to or left in its
// disk spool; the suite reconciles them by the set difference and the
// SDK's counters. A spooled batch is replayed over the same connection, so
// the interceptor sees its resend and acknowledgement like any other.
//
// The spool's promise across a crash needs a worker that can be killed
// with SIGKILL: the test binary runs itself as one (worker.go), and
// reports on its stdout which keys it had logged when, so that the parent
// can tell, after the kill, which entries had to survive it.
package faults
