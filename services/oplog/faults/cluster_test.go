//go:build faults

package faults

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestOpLogOnItsOwnCluster: the first step when one Postgres primary is no
// longer enough (SCALING.md) is the op log on a cluster of its own. Each
// service has its own DATABASE_URL, and login outcomes travel from the log
// to the profiles over gRPC (the relay), never through the database, so
// nothing else changes. OpLogService runs on one cluster and
// ProfileService on another, under SDK load with logins; each cluster
// holds only its own service's rows, and every stored login is counted
// once in its profile: checked id by id after ProfileService's tables are
// copied next to the log (into the log cluster's profile schema, which
// stayed empty).
func TestOpLogOnItsOwnCluster(t *testing.T) {
	logs, profiles := newEnv(t), newEnv(t)
	profile := profiles.Profile()
	profile.Start(t, 30*time.Second)
	oplog := logs.Oplog("PROFILE_ADDR=" + profile.Addr)
	oplog.Start(t, 30*time.Second)
	f := newFleet(t, oplog.Addr, fleetConfig{producers: 4, rate: 500, logins: 0.3})
	f.Start()
	time.Sleep(8 * time.Second)

	errs := f.Close(2 * time.Minute)
	drain := waitFor(t, 2*time.Minute, "oplog.login_outbox to empty", func() bool {
		return logs.mustCount(`SELECT count(*) FROM oplog.login_outbox`) == 0
	})
	foreignProfiles := logs.mustCount(`SELECT count(*) FROM profile.profiles`)
	foreignLogs := profiles.mustCount(`SELECT count(*) FROM oplog.operation_logs`)
	applied := profiles.mustCount(`SELECT count(*) FROM profile.login_events`)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, table := range []string{"profile.profiles", "profile.login_events"} {
		copyTable(ctx, t, profiles, logs, table)
	}
	r := verify(ctx, logs, f, verifyOptions{logins: true, expectNoLoss: true})
	for _, err := range errs {
		r.problem("SDK Close: %v", err)
	}
	r.PeakServerRSS = oplog.PeakRSS()
	if foreignProfiles != 0 || foreignLogs != 0 {
		r.problem("rows on the other service's cluster: %d profiles on the log's, %d log rows on the profiles'", foreignProfiles, foreignLogs)
	}
	r.figure("OpLogService and ProfileService on two clusters: %d login outcomes applied on the profiles' cluster, outbox empty %.1fs after the producers stopped; no row of either service on the other's cluster",
		applied, drain.Seconds())
	r.finish(t)
}

// copyTable copies a table's rows from one scenario's database to the
// same table in another's, with COPY (generated columns are recomputed).
func copyTable(ctx context.Context, t *testing.T, from, to *Env, table string) {
	t.Helper()
	src, err := from.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	dst, err := to.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close(context.Background())
	var buf bytes.Buffer
	if _, err := src.PgConn().CopyTo(ctx, &buf, "COPY "+table+" TO STDOUT"); err != nil {
		t.Fatalf("copy %s out: %v", table, err)
	}
	if _, err := dst.PgConn().CopyFrom(ctx, &buf, "COPY "+table+" FROM STDIN"); err != nil {
		t.Fatalf("copy %s in: %v", table, err)
	}
}
