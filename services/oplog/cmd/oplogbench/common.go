package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgcluster"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// ownCluster: database made a throwaway cluster, which trusts local
// connections, so the benchmark can set up and use the services' roles
// as `make run` does (README, "Database roles"). With DATABASE_URL
// everything runs as that URL's role.
var ownCluster bool

// database returns an admin DSN: DATABASE_URL, or a throwaway cluster.
// benchCluster is the throwaway cluster database started (nil with
// DATABASE_URL).
var benchCluster *pgcluster.Cluster

func database(ctx context.Context) (string, func(), error) {
	if url := os.Getenv("DATABASE_URL"); url != "" {
		return url, func() {}, nil
	}
	ownCluster = true
	dir, err := os.MkdirTemp("", "oplogbench-")
	if err != nil {
		return "", nil, err
	}
	_ = os.Chmod(dir, 0o755)
	c, err := pgcluster.New(ctx, pgcluster.Options{
		DataDir:           dir + "/data",
		Settings:          map[string]string{"max_connections": "200", "shared_buffers": "256MB", "max_wal_size": "4GB"},
		ParentDeathSignal: syscall.SIGQUIT,
	})
	if err == nil {
		err = c.Start(ctx)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	benchCluster = c
	return c.TCPURL(pgcluster.Superuser, "postgres"), func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Stop(stopCtx)
		_ = os.RemoveAll(dir)
	}, nil
}

// freshDatabase creates database name (dropping an old one), migrates it
// (with migrateBin's own `migrate` when given, so a baseline binary gets
// its own schema), creates the partitions of the last and next month, and
// returns its DSN as the admin. On a throwaway cluster, and unless
// migrateBin is a build from before the services had separate roles, the
// schemas of oplog and profile are bootstrapped and migrated by their
// owner roles, and startServer runs a build that knows the roles as the
// service's runtime role; older builds run as the admin throughout.
func freshDatabase(ctx context.Context, adminDSN, name, migrateBin string) (string, error) {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	cfg := conn.Config()
	dsn := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
	withRoles := ownCluster && (migrateBin == "" || knowsRoles(migrateBin))
	migrateDSN := dsn
	if withRoles {
		if err := bootstrap(ctx, dsn); err != nil {
			return "", err
		}
		bootstrapped.Store(dsn, true)
		migrateDSN = asRole(dsn, migrate.DefaultRoles(migrations.OpLog.Schema).Owner)
	}
	if migrateBin != "" {
		cmd := exec.Command(migrateBin, "migrate")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+migrateDSN, "LOG_LEVEL=warn")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s migrate: %w\n%s", migrateBin, err, out)
		}
	} else if _, err := migrate.Up(ctx, migrateDSN, migrations.OpLog, nil); err != nil {
		return "", err
	}
	if err := createPartitions(ctx, dsn, time.Now().AddDate(0, -1, 0), time.Now().AddDate(0, 1, 0)); err != nil {
		return "", err
	}
	return dsn, nil
}

// bootstrapped holds the DSNs of the databases freshDatabase bootstrapped.
var bootstrapped sync.Map

// bootstrap creates the roles and schemas of oplog and profile in the
// database of dsn (an admin's).
func bootstrap(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, set := range []migrations.Set{migrations.OpLog, migrations.Profile} {
		if err := migrate.Bootstrap(ctx, conn, set, migrate.DefaultRoles(set.Schema)); err != nil {
			return err
		}
	}
	return nil
}

// asRole is dsn (a postgres:// URL) as role, without a password.
func asRole(dsn, role string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	u.User = url.User(role)
	return u.String()
}

var knownBuilds sync.Map

// knowsRoles reports whether bin is a build that runs as a runtime role:
// one that creates partitions through the owner's function (0006) rather
// than with its own DDL. Older builds (BASELINE_REV) do not.
func knowsRoles(bin string) bool {
	if v, ok := knownBuilds.Load(bin); ok {
		return v.(bool)
	}
	b, err := os.ReadFile(bin)
	knows := err == nil && bytes.Contains(b, []byte("create_operation_logs_partition"))
	knownBuilds.Store(bin, knows)
	return knows
}

// serveDSN is what `bin serve` connects with on the database of dsn: the
// service's runtime role where the database has the roles and the build
// knows them, else dsn.
func serveDSN(bin, dsn string) string {
	if _, ok := bootstrapped.Load(dsn); !ok || !knowsRoles(bin) {
		return dsn
	}
	schema := migrations.OpLog.Schema
	if strings.HasPrefix(filepath.Base(bin), migrations.Profile.Schema) {
		schema = migrations.Profile.Schema
	}
	return asRole(dsn, migrate.DefaultRoles(schema).Runtime)
}

// createPartitions creates the monthly partitions from from to to: with
// the schema's function where it has one (0006), as the service does,
// else (a baseline build's schema) with DDL.
func createPartitions(ctx context.Context, dsn string, from, to time.Time) error {
	var hasFunction bool
	if err := queryOn(ctx, dsn, "SELECT to_regprocedure('oplog.create_operation_logs_partition(date)') IS NOT NULL", &hasFunction); err != nil {
		return err
	}
	for m := time.Date(from.Year(), from.Month(), 1, 0, 0, 0, 0, time.UTC); !m.After(to); m = m.AddDate(0, 1, 0) {
		stmt := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS oplog.operation_logs_p%04d%02d PARTITION OF oplog.operation_logs FOR VALUES FROM ('%s') TO ('%s')`,
			m.Year(), m.Month(), m.Format(time.RFC3339), m.AddDate(0, 1, 0).Format(time.RFC3339))
		if hasFunction {
			stmt = fmt.Sprintf(`SELECT oplog.create_operation_logs_partition('%s')`, m.Format(time.DateOnly))
		}
		if _, err := execOn(ctx, dsn, stmt); err != nil {
			return err
		}
	}
	return nil
}

func execOn(ctx context.Context, dsn, sql string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql)
	return tag.RowsAffected(), err
}

// queryOn runs a query of one value.
func queryOn(ctx context.Context, dsn, sql string, into any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(into)
}

// countRows counts the rows of table (a trusted, qualified name).
func countRows(ctx context.Context, dsn, table string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int64
	err = conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
	return n, err
}

var errorTypes = []string{"TIMEOUT", "SELECTOR_NOT_FOUND", "AUTH_REQUIRED", "RATE_LIMIT"}

// entries is a pool of varied entries, made once, that the load cycles
// through: generating each row anew would bill the generator's own string
// formatting to the system under test.
var entries = func() []oplogclient.Entry {
	rng := rand.New(rand.NewPCG(1, 1))
	out := make([]oplogclient.Entry, 10000)
	for i := range out {
		out[i] = entry(rng)
	}
	return out
}()

// entry is the shape of row both paths write: a typical worker log with a
// small payload.
func entry(rng *rand.Rand) oplogclient.Entry {
	e := oplogclient.Entry{
		UserID:            "0193a0c2-0000-7000-8000-" + fmt.Sprintf("%012d", rng.IntN(5000)),
		PlatformAccountID: "acct-" + strconv.Itoa(rng.IntN(5000)),
		OperationType:     oplogv1.OperationType(1 + rng.IntN(7)),
		ResourceID:        "shop-" + strconv.Itoa(rng.IntN(20000)),
		Outcome:           commonv1.Outcome_OUTCOME_SUCCESS,
		ExecutionTime:     time.Duration(50+rng.IntN(3000)) * time.Millisecond,
		ProxyUsed:         "proxy-" + strconv.Itoa(rng.IntN(40)),
		UserAgent:         "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0",
		RequestPayload:    map[string]any{"page": float64(rng.IntN(50)), "sort": "newest"},
	}
	if rng.IntN(10) == 0 {
		e.Outcome = commonv1.Outcome_OUTCOME_FAILED
		e.ErrorType = errorTypes[rng.IntN(len(errorTypes))]
		e.ErrorMessage = "operation failed: " + e.ErrorType
	}
	return e
}

func copyRun(ctx context.Context, adminDSN, name string, d time.Duration) (float64, error) {
	dsn, err := freshDatabase(ctx, adminDSN, name, "")
	if err != nil {
		return 0, err
	}
	rate, err := rawCopy(ctx, dsn, d)
	if err != nil {
		return 0, fmt.Errorf("raw copy: %w", err)
	}
	return rate, nil
}

// payloadJSON is the stored form of the entries' payloads.
var payloadJSON = func() map[float64][]byte {
	m := map[float64][]byte{}
	for p := 0; p < 50; p++ {
		m[float64(p)] = []byte(fmt.Sprintf(`{"page":%d,"sort":"newest"}`, p))
	}
	return m
}()

// rawCopy COPYs rows of the same shape straight into the table for d.
func rawCopy(ctx context.Context, dsn string, d time.Duration) (float64, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	cols := []string{"id", "create_time", "user_id", "platform_account_id", "operation_type", "resource_id", "outcome",
		"error_type", "error_message", "execution_time_ms", "retry_count", "proxy_used", "user_agent", "request_payload"}
	const batch, writers = 5000, 2
	start := time.Now()
	deadline := start.Add(d)
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for time.Now().Before(deadline) {
				rows := make([][]any, batch)
				for i := range rows {
					e := entries[rng.IntN(len(entries))]
					id, _ := uuid.NewV7()
					var errType, errMsg any
					if e.ErrorType != "" {
						errType, errMsg = e.ErrorType, e.ErrorMessage
					}
					rows[i] = []any{[16]byte(id), time.Now(), [16]byte(uuid.MustParse(e.UserID)), e.PlatformAccountID, int16(e.OperationType),
						e.ResourceID, int16(e.Outcome), errType, errMsg, e.ExecutionTime.Milliseconds(), int32(0), e.ProxyUsed, e.UserAgent,
						payloadJSON[e.RequestPayload["page"].(float64)]}
				}
				if _, err := pool.CopyFrom(ctx, pgx.Identifier{"oplog", "operation_logs"}, cols, pgx.CopyFromRows(rows)); err != nil {
					errs <- err
					return
				}
				total.Add(batch)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(total.Load()) / time.Since(start).Seconds(), nil
}

type server struct {
	cmd  *exec.Cmd
	addr string
}

// startServer starts `bin serve` on free ports, run as tr says with env
// added to its environment, and waits until it listens.
func startServer(bin, dsn string, tr transport, env ...string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return startServerOn(addr, bin, dsn, tr, env...)
}

// startServerOn is startServer on a given gRPC address.
func startServerOn(addr, bin, dsn string, tr transport, env ...string) (*server, error) {
	metrics, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+serveDSN(bin, dsn), "LISTEN_ADDR="+addr, "METRICS_ADDR="+metrics, "LOG_LEVEL=warn", "DB_MAX_CONNS=8")
	cmd.Env = append(cmd.Env, tr.serveEnv...)
	cmd.Env = append(cmd.Env, env...)
	if os.Getenv("OPLOGBENCH_VERBOSE") != "" {
		fmt.Println("server metrics and pprof on", metrics)
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (run `make build` first): %w", bin, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return &server{cmd: cmd, addr: addr}, nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return nil, errors.New("server did not start listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peakRSS is the server's high-water resident set size, in bytes.
func (s *server) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.cmd.Wait()
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

type loadResult struct {
	rate, p50, p99                          float64
	unaryP50, unaryP99                      float64 // milliseconds
	spooled, replayed                       int64
	acked, dropped, failed, retries, stored int64
	rss                                     int64
}

// sdkLoad runs clients SDK clients, each fed by two goroutines that keep
// its buffer from overflowing (a worker fleet that logs as fast as the
// service acknowledges), for d.
func sdkLoad(addr string, dial []grpc.DialOption, clients int, d time.Duration, spool bool) (loadResult, error) {
	var mu sync.Mutex
	var latencies []time.Duration
	onFlush := oplogclient.OnFlush(func(r oplogclient.FlushResult) {
		mu.Lock()
		latencies = append(latencies, r.Latency)
		mu.Unlock()
	})
	var all []*oplogclient.Client
	var conns []*grpc.ClientConn
	for i := 0; i < clients; i++ {
		conn, err := grpc.NewClient(addr, dial...)
		if err != nil {
			return loadResult{}, err
		}
		conns = append(conns, conn)
		opts := []oplogclient.Option{onFlush, oplogclient.WithFlushers(4)}
		if spool {
			dir, err := os.MkdirTemp("", "oplogbench-spool-")
			if err != nil {
				return loadResult{}, err
			}
			defer os.RemoveAll(dir)
			opts = append(opts, oplogclient.WithSpool(dir, 1<<30))
		}
		c, err := oplogclient.New(conn, opts...)
		if err != nil {
			return loadResult{}, err
		}
		all = append(all, c)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range all {
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
				for {
					select {
					case <-stop:
						return
					default:
					}
					if c.Stats().InBuffer > 6000 {
						time.Sleep(time.Millisecond)
						continue
					}
					for i := 0; i < 100; i++ {
						c.Log(context.Background(), entries[rng.IntN(len(entries))])
					}
				}
			}()
		}
	}
	// Warm up, then measure acknowledgements over d.
	time.Sleep(2 * time.Second)
	ackedAt := func() int64 {
		var n int64
		for _, c := range all {
			n += c.Stats().Acknowledged
		}
		return n
	}
	mu.Lock()
	latencies = latencies[:0]
	mu.Unlock()
	before, start := ackedAt(), time.Now()
	time.Sleep(d)
	after, elapsed := ackedAt(), time.Since(start)
	close(stop)
	wg.Wait()

	res := loadResult{rate: float64(after-before) / elapsed.Seconds()}
	st, err := closeAll(all)
	if err != nil {
		return res, err
	}
	res.acked, res.dropped, res.failed, res.retries = st.Acknowledged, st.Dropped, st.Failed, st.Retries
	res.spooled, res.replayed = st.Spooled, st.SpoolReplayed
	for _, conn := range conns {
		_ = conn.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(latencies)
	if n := len(latencies); n > 0 {
		res.p50 = float64(latencies[n/2].Microseconds()) / 1000
		res.p99 = float64(latencies[n*99/100].Microseconds()) / 1000
	}
	return res, nil
}

// unaryLatency calls ListOperationLogs for one user's latest 20 rows,
// one call at a time, and returns the p50 and p99 in milliseconds: the
// cost of a unary call's round trip, authentication included, with a
// cheap query behind it.
func unaryLatency(ctx context.Context, addr string, dial []grpc.DialOption) (p50, p99 float64, err error) {
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	client := oplogv1.NewOpLogServiceClient(conn)
	rng := rand.New(rand.NewPCG(3, 3))
	const warmUp, calls = 100, 2000
	took := make([]time.Duration, 0, calls)
	for i := 0; i < warmUp+calls; i++ {
		req := &oplogv1.ListOperationLogsRequest{UserId: entries[rng.IntN(len(entries))].UserID, PageSize: 20}
		start := time.Now()
		if _, err := client.ListOperationLogs(ctx, req); err != nil {
			return 0, 0, err
		}
		if i >= warmUp {
			took = append(took, time.Since(start))
		}
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return ms(took[calls/2]), ms(took[calls*99/100]), nil
}

// concurrentStreams keeps n Ingest streams open at once for d, each
// sending one message of 100 rows and waiting for its acknowledgement,
// spread over 50 connections, and returns the rows/s achieved.
func concurrentStreams(addr string, dial []grpc.DialOption, n int, d time.Duration) (float64, error) {
	var conns []*grpc.ClientConn
	for i := 0; i < 50; i++ {
		conn, err := grpc.NewClient(addr, dial...)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	var rows atomic.Int64
	// The first error; errors of different types may come (an atomic.Value
	// panics on those).
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := oplogv1.NewOpLogServiceClient(conns[i%len(conns)])
			rng := rand.New(rand.NewPCG(uint64(i), 3))
			for time.Now().Before(deadline) {
				logs := make([]*oplogv1.OperationLog, 100)
				for j := range logs {
					e := entries[rng.IntN(len(entries))]
					id, _ := uuid.NewV7()
					logs[j] = &oplogv1.OperationLog{
						Id: id.String(), UserId: e.UserID, PlatformAccountId: e.PlatformAccountID,
						OperationType: e.OperationType, ResourceId: e.ResourceID, Outcome: e.Outcome,
						ProxyUsed: e.ProxyUsed, UserAgent: e.UserAgent, CreateTime: timestamppb.Now(),
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				stream, err := client.Ingest(ctx)
				if err == nil {
					err = stream.Send(&oplogv1.IngestRequest{Logs: logs})
				}
				var resp *oplogv1.IngestResponse
				if err == nil {
					resp, err = stream.CloseAndRecv()
				}
				cancel()
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					time.Sleep(100 * time.Millisecond) // back off like the SDK
					continue
				}
				rows.Add(resp.GetAccepted())
			}
		}()
	}
	wg.Wait()
	if err := firstErr; err != nil {
		fmt.Printf("                             (some streams were told to back off: %v)\n", err)
	}
	return float64(rows.Load()) / time.Since(start).Seconds(), nil
}

// closeAll closes the clients (a minute in all to deliver what they hold)
// and returns the sums of the counters the figures use.
func closeAll(all []*oplogclient.Client) (oplogclient.Stats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var sum oplogclient.Stats
	for _, c := range all {
		if err := c.Close(ctx); err != nil {
			return sum, err
		}
		st := c.Stats()
		sum.Enqueued += st.Enqueued
		sum.Acknowledged += st.Acknowledged
		sum.Dropped += st.Dropped
		sum.Failed += st.Failed
		sum.Retries += st.Retries
		sum.Spooled += st.Spooled
		sum.SpoolReplayed += st.SpoolReplayed
	}
	return sum, nil
}
