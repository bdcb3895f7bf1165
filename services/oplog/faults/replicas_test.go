//go:build faults

package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/platforma/platforma/services/kit/migrate"
)

// The names clients resolve, as a cluster's headless Services would be.
const (
	oplogName   = "oplog.platforma.test"
	profileName = "profile.platforma.test"
)

// TestStatelessReplicas: three OpLogService and two ProfileService
// replicas on one database, each on its own loopback address behind one
// DNS name, as headless Services give them. The SDK and the login relay
// reach them through gRPC's dns resolver with round_robin. Under load, the
// replica holding the relay and one ProfileService replica are killed
// with -9, and restarted 8 s later; then the daily life cycle fires on all
// three replicas at the same minute. Checked: nothing acknowledged lost,
// nothing stored twice, every login counted once in its profile (as in
// every scenario); every replica took calls; never two relays (or two life
// cycles) at once, sampled from pg_locks every 50 ms; the relay moved to
// another replica; the old month archived, exported and verified by one
// run, each step once; partition maintenance on three replicas without a
// failure.
func TestStatelessReplicas(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dns := newDNS(t)
	oplogIPs, profileIPs := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, []string{"127.0.0.1", "127.0.0.2"}
	dns.Set(oplogName, oplogIPs...)
	dns.Set(profileName, profileIPs...)
	oplogPort, profilePort := sharedPort(t, oplogIPs), sharedPort(t, profileIPs)

	// An old month for the life cycle: five months back, far past the
	// 90-day hot window.
	old := time.Now().UTC().AddDate(0, -5, 0)
	month := time.Date(old.Year(), old.Month(), 1, 0, 0, 0, 0, time.UTC)
	const seeded = 3000
	e.exec(ctx, database, `SELECT oplog.create_operation_logs_partition($1::date)`, month)
	e.exec(ctx, database, `INSERT INTO oplog.operation_logs (id, create_time, user_id, operation_type, outcome, resource_id)
		SELECT gen_random_uuid(), $1::timestamptz + g * interval '10 minutes', '0193a0c2-0000-7000-8000-000000000999', 3, 1, 'seed-' || g
		FROM generate_series(0, $2::int - 1) g`, month, seeded)
	// Every replica runs the life cycle daily at the same minute, 25 to
	// 85 s from now: they all wake together and race for it.
	runAt := time.Now().UTC().Add(25 * time.Second).Truncate(time.Minute).Add(time.Minute)
	cold := t.TempDir()
	_ = os.Chmod(cold, 0o777)

	var profiles, oplogs []*Proc
	for i, ip := range profileIPs {
		p := e.Replica("profile", fmt.Sprintf("profile-%d", i+1), net.JoinHostPort(ip, strconv.Itoa(profilePort)))
		p.Start(t, 30*time.Second)
		profiles = append(profiles, p)
	}
	for i, ip := range oplogIPs {
		name := fmt.Sprintf("oplog-%d", i+1)
		p := e.Replica("oplog", name, net.JoinHostPort(ip, strconv.Itoa(oplogPort)),
			"PROFILE_ADDR="+dns.Target(profileName, profilePort),
			"LIFECYCLE_DATABASE_URL="+e.URL(migrate.DefaultRoles("oplog").Owner)+"&application_name="+name+"-lifecycle",
			"LIFECYCLE_STORE="+cold,
			"LIFECYCLE_RUN_AT="+runAt.Format("15:04"))
		p.Start(t, 30*time.Second)
		oplogs = append(oplogs, p)
	}
	locks := watchLocks(t, e)

	f := newFleet(t, dns.Target(oplogName, oplogPort), fleetConfig{producers: 4, rate: 500, logins: 0.3})
	f.Start()
	time.Sleep(5 * time.Second)

	// Round robin: every replica has taken flushes, and the relay's calls
	// reach both ProfileService replicas.
	for _, p := range oplogs {
		if n := handled(t, p, "Ingest"); n == 0 {
			t.Errorf("%s took no Ingest stream in 5 s of load", p.Name)
		} else {
			t.Logf("%s: %d Ingest streams in the first 5 s", p.Name, n)
		}
	}
	for _, p := range profiles {
		if n := handled(t, p, "BatchRecordLoginResults"); n == 0 {
			t.Errorf("%s took no BatchRecordLoginResults call in 5 s of load", p.Name)
		} else {
			t.Logf("%s: %d BatchRecordLoginResults calls in the first 5 s", p.Name, n)
		}
	}

	// Kill the replica that holds the relay, and a ProfileService replica.
	var leader *Proc
	waitFor(t, 10*time.Second, "a replica to hold the relay's lock", func() bool {
		leader = byName(oplogs, locks.relayHolder())
		return leader != nil
	})
	killed := time.Now()
	leader.Kill9()
	profiles[0].Kill9()
	var successor string
	takeover := waitFor(t, 30*time.Second, "another replica to take the relay over", func() bool {
		successor = locks.relayHolder()
		return successor != "" && successor != leader.Name
	})
	t.Logf("killed %s (the relay) and %s; %s took the relay over %s later", leader.Name, profiles[0].Name, successor, secs(takeover))
	time.Sleep(time.Until(killed.Add(8 * time.Second)))
	leader.Start(t, 30*time.Second)
	profiles[0].Start(t, 30*time.Second)

	// The life cycle, raced for by the three replicas.
	var state string
	waitFor(t, time.Until(runAt)+2*time.Minute, "the old month to be archived, exported and verified", func() bool {
		state = ""
		conn, err := e.conn(ctx)
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		_ = conn.QueryRow(ctx, `SELECT state FROM oplog.lifecycle_months WHERE month = $1`, month).Scan(&state)
		return state == "verified"
	})
	time.Sleep(3 * time.Second) // load after it, too
	f.Stop()
	locks.stop()

	r := finish(t, e, f, verifyOptions{logins: true, expectNoLoss: true}, oplogs...)
	maxRelay, maxLifecycle, relayHolders, lifecycleHolders, samples := locks.result()
	r.figure("%d lock samples: relay held by %s in turn, at most %d at once; the life cycle held by %s, at most %d at once",
		samples, strings.Join(relayHolders, " then "), maxRelay, strings.Join(lifecycleHolders, ", "), maxLifecycle)
	if maxRelay > 1 {
		r.problem("%d sessions held the relay's lock at once", maxRelay)
	}
	if maxLifecycle > 1 {
		r.problem("%d sessions held the life cycle's lock at once", maxLifecycle)
	}
	if len(relayHolders) < 2 {
		r.problem("the relay never moved off the killed replica: holders %v", relayHolders)
	}
	checkLifecycleRanOnce(ctx, t, e, r, month, seeded)
	for _, p := range oplogs {
		if log := readFile(p.logPath); strings.Contains(log, "creating partitions failed") {
			r.problem("%s: partition maintenance failed:\n%s", p.Name, tailFile(p.logPath, 10))
		}
		r.figure("%s: %d Ingest streams since its last start", p.Name, handled(t, p, "Ingest"))
	}
	missing := e.mustCount(`SELECT count(*) FROM generate_series(date_trunc('month', now() - interval '35 days'), date_trunc('month', now() + interval '1 month'), interval '1 month') m
		WHERE to_regclass('oplog.operation_logs_p' || to_char(m, 'YYYYMM')) IS NULL`)
	if missing != 0 {
		r.problem("%d partitions of the accepted window or the next month missing", missing)
	}
	r.finish(t)
}

// checkLifecycleRanOnce: the month was archived (no longer in the hot
// table), exported with all its rows and verified, by one run whose every
// step is recorded once.
func checkLifecycleRanOnce(ctx context.Context, t *testing.T, e *Env, r *Report, month time.Time, seeded int) {
	conn, err := e.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var runs, exportRows int64
	if err := conn.QueryRow(ctx, `SELECT count(DISTINCT run_id) FROM oplog.lifecycle_steps WHERE NOT dry_run`).Scan(&runs); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT coalesce(export_rows, -1) FROM oplog.lifecycle_months WHERE month = $1`, month).Scan(&exportRows); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT step, count(*), bool_and(coalesce(ok, false)) FROM oplog.lifecycle_steps
		WHERE month = $1 AND NOT dry_run GROUP BY step ORDER BY min(id)`, month)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for rows.Next() {
		var step string
		var n int64
		var ok bool
		if err := rows.Scan(&step, &n, &ok); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, fmt.Sprintf("%s ×%d", step, n))
		if n != 1 || !ok {
			r.problem("life cycle step %s of %s: %d times, all ok %v (want once, ok)", step, month.Format("2006-01"), n, ok)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if runs != 1 {
		r.problem("%d life cycle runs did work (want 1: the others find the lock held)", runs)
	}
	if exportRows != int64(seeded) {
		r.problem("the export of %s holds %d rows, want %d", month.Format("2006-01"), exportRows, seeded)
	}
	r.figure("life cycle of %s: one run on three replicas, steps %s; %d rows exported", month.Format("2006-01"), strings.Join(steps, ", "), exportRows)
}

// sharedPort is a port free on every one of ips (loopback addresses), so
// that the replicas behind one name listen on the same port, as pods
// behind a headless Service do.
func sharedPort(t *testing.T, ips []string) int {
	t.Helper()
	for attempt := 0; attempt < 100; attempt++ {
		port := freePort(t) // free on 127.0.0.1
		free := true
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			_ = l.Close()
		}
		if free {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}

func byName(ps []*Proc, name string) *Proc {
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// handled sums grpc_server_handled_total of method over codes, from the
// process's /metrics (since its last start).
func handled(t *testing.T, p *Proc, method string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "grpc_server_handled_total{") || !strings.Contains(line, `grpc_method="`+method+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += int64(v)
		}
	}
	return sum
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// lockWatch samples, every 50 ms, which sessions hold the advisory locks
// of the relay and of the life cycle (the keys of services/oplog/internal/
// store), by their application_name: the replica's name.
type lockWatch struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu                      sync.Mutex
	current                 string // the relay's holder in the last sample
	maxRelay, maxLifecycle  int
	relayOrder, lifeHolders []string
	samples                 int
}

const (
	relayLockKey     = "oplog.login_outbox relay"
	lifecycleLockKey = "oplog lifecycle"
)

func watchLocks(t *testing.T, e *Env) *lockWatch {
	t.Helper()
	w := &lockWatch{done: make(chan struct{})}
	conn, err := e.conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer conn.Close(context.Background())
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			rows, err := conn.Query(ctx, `SELECT k.name, a.application_name
				FROM pg_locks l
				JOIN pg_stat_activity a ON a.pid = l.pid
				JOIN (VALUES ('relay', hashtext($1)), ('lifecycle', hashtext($2))) k(name, key)
				  ON ((l.classid::bigint << 32) | l.objid::bigint) = k.key::bigint
				WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1`, relayLockKey, lifecycleLockKey)
			if err != nil {
				cancel()
				continue
			}
			var relay, life []string
			for rows.Next() {
				var name, app string
				if rows.Scan(&name, &app) == nil {
					if name == "relay" {
						relay = append(relay, app)
					} else {
						life = append(life, app)
					}
				}
			}
			err = rows.Err()
			cancel()
			if err != nil {
				continue
			}
			w.record(relay, life)
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *lockWatch) record(relay, life []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples++
	w.maxRelay, w.maxLifecycle = max(w.maxRelay, len(relay)), max(w.maxLifecycle, len(life))
	w.current = ""
	if len(relay) == 1 {
		w.current = relay[0]
		if n := len(w.relayOrder); n == 0 || w.relayOrder[n-1] != relay[0] {
			w.relayOrder = append(w.relayOrder, relay[0])
		}
	}
	for _, h := range life {
		if len(w.lifeHolders) == 0 || w.lifeHolders[len(w.lifeHolders)-1] != h {
			w.lifeHolders = append(w.lifeHolders, h)
		}
	}
}

// relayHolder is the replica holding the relay's lock ("" for none).
func (w *lockWatch) relayHolder() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

func (w *lockWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
}

func (w *lockWatch) result() (maxRelay, maxLifecycle int, relayHolders, lifecycleHolders []string, samples int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxRelay, w.maxLifecycle, w.relayOrder, w.lifeHolders, w.samples
}
