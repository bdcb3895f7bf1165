// Command devstack is `make run`: the whole platforma stack on one machine.
//
// Without DATABASE_URL it creates (the first time) and starts a Postgres
// cluster in .data/ from the machine's Postgres binaries that asks every
// connection for a password (generated, kept in .data/pgpass), with one
// database and, per service, an owner role that owns its schema and runs
// `migrate` and a runtime role with only the DML grants `serve` needs
// (README, "Database roles"), so no service can touch the others' schemas.
// It then migrates and starts the three binaries, waits until
// each of them, its own process and not whatever else answers on its port,
// is serving and its health is SERVING, and prints commands to try. Ctrl-C
// stops the services gracefully, then the cluster.
//
// It says "up" only when everything it started is running: a port taken by
// another process, a second `make run` on the same data directory, or a
// service that exits during start-up stop everything it started, name the
// cause and exit non-zero. Every port can be chosen (see portVars).
//
// With -json it is a test harness's stack (jsonmode.go): free ports, the
// services' output on stderr, one JSON line on stdout saying where
// everything is, commands on stdin to kill and restart a service, and a
// clean stop when stdin ends.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/platforma/platforma/migrations"
	kitmigrate "github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgcluster"
)

// service is one binary of the stack.
type service struct {
	name        string // binary, schema and role name
	grpcService string
	// port and metricsPort are where it listens (on every interface, as
	// the binaries do by default); addr and metricsAddr are how to reach
	// them from this machine.
	port, metricsPort int
	addr, metricsAddr string
	// env is the service's own environment, unless already set.
	env []string
}

// ports are the gRPC and metrics ports of profile, reviewmeta and oplog.
type ports struct{ grpc, metrics [3]int }

// defaultPorts are the documented ones (README, "Running a service").
var defaultPorts = ports{grpc: [3]int{50051, 50052, 50053}, metrics: [3]int{9451, 9452, 9453}}

// defaultPGPort is the local cluster's port.
const defaultPGPort = 55432

// serviceNames are the services in the order of ports.
var serviceNames = [3]string{"profile", "reviewmeta", "oplog"}

// portVar is the environment variable that sets a service's gRPC or
// metrics port: PROFILE_GRPC_PORT, OPLOG_METRICS_PORT, ...
func portVar(serviceName, kind string) string {
	return strings.ToUpper(serviceName) + "_" + strings.ToUpper(kind) + "_PORT"
}

// portsFromEnv reads the ports from getenv: PG_PORT and, per service,
// <SERVICE>_GRPC_PORT and <SERVICE>_METRICS_PORT, each defaulting to the
// usual one. Every problem is reported at once, naming the variable.
func portsFromEnv(getenv func(string) string) (ports, int, error) {
	p, pg := defaultPorts, defaultPGPort
	var errs []error
	used := map[int]string{}
	read := func(name string, into *int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				errs = append(errs, fmt.Errorf("%s=%q is not a port number (1-65535)", name, v))
				return
			}
			*into = n
		}
		if other, dup := used[*into]; dup {
			errs = append(errs, fmt.Errorf("%s and %s are both port %d", other, name, *into))
			return
		}
		used[*into] = name
	}
	read("PG_PORT", &pg)
	for i, name := range serviceNames {
		read(portVar(name, "grpc"), &p.grpc[i])
		read(portVar(name, "metrics"), &p.metrics[i])
	}
	return p, pg, errors.Join(errs...)
}

// stackServices describes the three services on p.
func stackServices(p ports) []service {
	s := []service{
		{name: serviceNames[0], grpcService: "platforma.profile.v1.ProfileService"},
		{name: serviceNames[1], grpcService: "platforma.reviewmeta.v1.ReviewMetadataService"},
		{name: serviceNames[2], grpcService: "platforma.oplog.v1.OpLogService"},
	}
	for i := range s {
		s[i].port, s[i].metricsPort = p.grpc[i], p.metrics[i]
		s[i].addr, s[i].metricsAddr = fmt.Sprintf("localhost:%d", p.grpc[i]), fmt.Sprintf("localhost:%d", p.metrics[i])
	}
	// Login outcomes in the log reach the profiles.
	s[2].env = []string{"PROFILE_ADDR=" + s[0].addr}
	return s
}

const database = "platforma"

// config is one devstack run.
type config struct {
	services []service
	binDir   string
	dataDir  string
	grpcurl  string
	// databaseURL, when set, is used by all three services and no cluster
	// is started; otherwise the cluster in dataDir listens on pgPort.
	databaseURL string
	pgPort      int
	// out receives devstack's lines, the services' output and the banner.
	out io.Writer
	// harness, when set, is -json mode: the stack is described on its
	// writer instead of the banner, and runs until its reader ends.
	harness *harness
}

func main() {
	binDir := flag.String("bin", "bin", "directory with the service binaries")
	dataDir := flag.String("data", ".data", "directory of the local Postgres cluster")
	grpcurl := flag.String("grpcurl", "grpcurl", "grpcurl binary, for the printed examples")
	jsonMode := flag.Bool("json", false, "for test harnesses: free ports, output on stderr, one JSON line on stdout describing the stack; stops when stdin ends (see jsonmode.go)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: devstack [flags]\n\nPorts: PG_PORT (%d) and %s, %s, ... (%d, %d, ...) in the environment.\n\n",
			defaultPGPort, portVar("profile", "grpc"), portVar("profile", "metrics"), defaultPorts.grpc[0], defaultPorts.metrics[0])
		flag.PrintDefaults()
	}
	flag.Parse()

	getenv, out, h := os.Getenv, io.Writer(os.Stdout), (*harness)(nil)
	if *jsonMode {
		getenv, out = freePortsUnlessSet(os.Getenv), os.Stderr
		h = &harness{in: os.Stdin, out: os.Stdout}
	}
	p, pgPort, err := portsFromEnv(getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = run(ctx, config{
		services: stackServices(p), binDir: *binDir, dataDir: *dataDir, grpcurl: *grpcurl,
		databaseURL: os.Getenv("DATABASE_URL"), pgPort: pgPort, out: out, harness: h,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndevstack: platforma is NOT up: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	con := &console{w: cfg.out}
	services := cfg.services
	// dsns are what `serve` connects with, migrateDSNs `migrate`.
	dsns, migrateDSNs := map[string]string{}, map[string]string{}
	dbDescription := "DATABASE_URL"
	adminURL := cfg.databaseURL // the superuser's, with its password: for -json
	if cfg.databaseURL == "" {
		// Before anything starts: the clearest message for the likeliest
		// mistake, `make run` twice in one folder.
		if err := checkDataDirFree(cfg.dataDir); err != nil {
			return err
		}
	}
	if err := checkPortsFree(services, cfg.databaseURL == "", cfg.pgPort); err != nil {
		return err
	}
	if cfg.databaseURL != "" {
		for _, s := range services {
			dsns[s.name], migrateDSNs[s.name] = cfg.databaseURL, cfg.databaseURL
		}
	} else {
		passwords, generated, err := loadPasswords(cfg.dataDir, services)
		if err != nil {
			return err
		}
		cluster, err := startCluster(ctx, con, cfg.dataDir, cfg.pgPort, passwords[pgcluster.Superuser], generated[pgcluster.Superuser])
		if err != nil {
			return stoppedOr(ctx, con, err)
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			con.logf("stopping postgres")
			if err := cluster.Stop(stopCtx); err != nil {
				con.logf("stop postgres: %v", err)
			}
		}()
		if err := bootstrap(ctx, cluster, services, passwords); err != nil {
			return err
		}
		adminURL = cluster.URL(pgcluster.Superuser, passwords[pgcluster.Superuser], database)
		for _, s := range services {
			roles := kitmigrate.DefaultRoles(s.name)
			dsns[s.name] = cluster.URL(roles.Runtime, passwords[roles.Runtime], database)
			migrateDSNs[s.name] = cluster.URL(roles.Owner, passwords[roles.Owner], database)
		}
		pgpass := filepath.Join(cfg.dataDir, pgpassFile)
		dbDescription = fmt.Sprintf("%s (data in %s; passwords in %s:\n%14sPGPASSFILE=%s psql -h 127.0.0.1 -p %d -U postgres %s)",
			cluster.TCPURL(pgcluster.Superuser, database), cfg.dataDir, pgpass, "", pgpass, cluster.Port(), database)
	}

	for _, s := range services {
		if err := migrate(ctx, con, cfg.binDir, s, migrateDSNs[s.name]); err != nil {
			return stoppedOr(ctx, con, err)
		}
	}

	credsDir := cfg.dataDir
	if credsDir == "" {
		// DATABASE_URL without a data directory: credentials for this run.
		tmp, err := os.MkdirTemp("", "platforma-devstack-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		credsDir = tmp
	}
	creds, err := prepareCredentials(credsDir)
	if err != nil {
		return err
	}
	healthCreds, err := creds.workerDialOption()
	if err != nil {
		return err
	}

	var procs []*process
	// Room for every exit of a -json run's restarts too: a process's
	// reader must never block on it.
	exited := make(chan *process, 64)
	defer func() { stopAll(procs) }()
	envs := map[string][]string{}
	coldDir, err := filepath.Abs(filepath.Join(credsDir, "cold"))
	if err != nil {
		return err
	}
	for _, s := range services {
		env := creds.serviceEnv(s)
		if s.name == serviceNames[2] {
			// OpLogService's daily life cycle (archive, export, retention)
			// runs as the schema's owner and exports next to the data.
			for _, kv := range []string{"LIFECYCLE_DATABASE_URL=" + migrateDSNs[s.name], "LIFECYCLE_STORE=" + coldDir} {
				if name, _, _ := strings.Cut(kv, "="); os.Getenv(name) == "" {
					env = append(env, kv)
				}
			}
		}
		envs[s.name] = env
		p, err := startService(con, cfg.binDir, s, dsns[s.name], env, exited)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	if err := waitReady(ctx, procs, healthCreds, 60*time.Second); err != nil {
		return stoppedOr(ctx, con, err)
	}
	if cfg.harness != nil {
		restart := func(i int) (*process, error) {
			s := services[i]
			p, err := startService(con, cfg.binDir, s, dsns[s.name], envs[s.name], exited)
			if err != nil {
				return nil, err
			}
			procs[i] = p
			return p, waitReady(ctx, []*process{p}, healthCreds, 60*time.Second)
		}
		return cfg.harness.serve(ctx, con, describe(services, creds, adminURL, procs), procs, restart, exited)
	}
	con.banner(services, creds.shellFunctions(cfg.grpcurl), dbDescription)

	select {
	case <-ctx.Done():
		con.logf("stopping services")
		return nil
	case p := <-exited:
		return fmt.Errorf("%s exited unexpectedly (%v); see its log lines above", p.s.name, p.exitErr)
	}
}

// stoppedOr hides err when it only says that Ctrl-C came during start-up.
func stoppedOr(ctx context.Context, con *console, err error) error {
	if ctx.Err() != nil {
		con.logf("stopping")
		return nil
	}
	return err
}

// anotherRun is the hint for a data directory or ports in use.
const anotherRun = "Is another `make run` still running (in this folder or another)? Stop it first (Ctrl-C in its terminal)"

// checkDataDirFree fails when a live Postgres holds the cluster in
// dataDir: another `make run` on the same folder. Postgres would refuse to
// start too, but by then its refusal can be mistaken for a start (the
// other run's server answers on the same socket).
func checkDataDirFree(dataDir string) error {
	pidFile := filepath.Join(dataDir, "pg", "postmaster.pid")
	pid, err := postmasterPid(pidFile)
	if err != nil {
		return nil // no cluster yet, or not running
	}
	if alive(pid) {
		abs, _ := filepath.Abs(dataDir)
		return fmt.Errorf("another `make run` is already using %s: its Postgres (pid %d, %s) is running.\nStop that one first (Ctrl-C in its terminal), or set DATABASE_URL to use another database", abs, pid, pidFile)
	}
	return nil // stale: Postgres removes it
}

// postmasterPid reads the pid on the first line of postmaster.pid.
func postmasterPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

// alive reports whether process pid exists (EPERM: it does, owned by
// someone else).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// checkPortsFree fails, naming each port and the variable that moves it,
// when one that the stack would listen on is taken.
func checkPortsFree(services []service, cluster bool, pgPort int) error {
	var busy []string
	try := func(addr string, port int, what, variable string) {
		l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", addr, port))
		if err != nil {
			busy = append(busy, fmt.Sprintf("port %d (%s; %s picks another): %v", port, what, variable, err))
			return
		}
		_ = l.Close()
	}
	if cluster {
		try("127.0.0.1", pgPort, "postgres", "PG_PORT")
	}
	for _, s := range services {
		try("", s.port, s.name+" gRPC", portVar(s.name, "grpc"))
		try("", s.metricsPort, s.name+" metrics", portVar(s.name, "metrics"))
	}
	if len(busy) > 0 {
		return fmt.Errorf("ports already in use by another process:\n  %s\n%s, or choose free ports",
			strings.Join(busy, "\n  "), anotherRun)
	}
	return nil
}

// startCluster starts the cluster in dataDir, creating it the first time,
// with password the superuser's (resetPassword: a new one, for a cluster
// that has another). A cluster made before passwords (trust) is
// converted.
func startCluster(ctx context.Context, con *console, dataDir string, port int, password string, resetPassword bool) (*pgcluster.Cluster, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, err
	}
	con.logf("starting postgres in %s on 127.0.0.1:%d (log: %s)", abs, port, filepath.Join(abs, "postgres.log"))
	cluster, err := pgcluster.New(ctx, pgcluster.Options{
		DataDir:           filepath.Join(abs, "pg"),
		SocketDir:         filepath.Join(abs, "run"),
		LogFile:           filepath.Join(abs, "postgres.log"),
		Port:              port,
		Settings:          map[string]string{"max_connections": "200"},
		ParentDeathSignal: syscall.SIGINT,
		Password:          password,
		ResetPassword:     resetPassword,
	})
	if err != nil {
		return nil, err
	}
	if err := cluster.Start(ctx); err != nil {
		return nil, fmt.Errorf("%w\n%s; or is port %d taken? PG_PORT picks another port", err, anotherRun, port)
	}
	// The server that answered must be ours: another run's, on the same
	// data directory and socket, answers too while ours refuses to start.
	pidFile := filepath.Join(abs, "pg", "postmaster.pid")
	if pid, err := postmasterPid(pidFile); err != nil || pid != cluster.Pid() || !cluster.Running() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cluster.Stop(stopCtx)
		return nil, fmt.Errorf("postgres did not start in %s: another server holds it (%s names pid %d, ours was %d).\n%s",
			abs, pidFile, pid, cluster.Pid(), anotherRun)
	}
	return cluster, nil
}

// pgpassFile, in the data directory, holds the generated password of
// every role of the local cluster, in libpq's password file format
// (PGPASSFILE), readable by its owner only.
const pgpassFile = "pgpass"

// clusterRoles are the local cluster's login roles: the superuser, then
// each service's owner and runtime roles.
func clusterRoles(services []service) []string {
	roles := []string{pgcluster.Superuser}
	for _, s := range services {
		r := kitmigrate.DefaultRoles(s.name)
		roles = append(roles, r.Owner, r.Runtime)
	}
	return roles
}

// loadPasswords reads the roles' passwords from dataDir/pgpass, makes one
// up for every role that has none yet (32 random bytes, hex) and writes
// the file back (mode 0600) when it did. generated names the new ones.
func loadPasswords(dataDir string, services []service) (passwords map[string]string, generated map[string]bool, err error) {
	path := filepath.Join(dataDir, pgpassFile)
	passwords, generated = map[string]string{}, map[string]bool{}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		// host:port:database:user:password; ours have no colons or backslashes.
		if f := strings.Split(line, ":"); len(f) == 5 && f[4] != "" {
			passwords[f[3]] = f[4]
		}
	}
	roles := clusterRoles(services)
	for _, role := range roles {
		if passwords[role] != "" {
			continue
		}
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, nil, err
		}
		passwords[role], generated[role] = hex.EncodeToString(secret), true
	}
	if len(generated) == 0 {
		// Whatever made it, it stays the owner's alone.
		return passwords, generated, os.Chmod(path, 0o600)
	}
	var out strings.Builder
	out.WriteString("# Passwords of the roles of `make run`'s Postgres (generated). PGPASSFILE=" + path + " psql ...\n")
	for _, role := range roles {
		for _, host := range []string{"127.0.0.1", "localhost"} { // localhost: also the Unix socket
			fmt.Fprintf(&out, "%s:*:*:%s:%s\n", host, role, passwords[role])
		}
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, nil, err
	}
	tmp, err := os.CreateTemp(dataDir, pgpassFile+".*")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(out.String()); err != nil {
		_ = tmp.Close()
		return nil, nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, nil, err
	}
	// CreateTemp makes it 0600.
	return passwords, generated, os.Rename(tmp.Name(), path)
}

// bootstrap creates the database, and for each service its schema and
// its two roles (migrate.Bootstrap), and sets every role's password.
// Idempotent; it also converts the layout of a cluster made before roles
// were separated (one role per service, with CREATE on the database).
func bootstrap(ctx context.Context, cluster *pgcluster.Cluster, services []service, passwords map[string]string) error {
	conn, err := pgx.Connect(ctx, cluster.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", database).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+database); err != nil {
			return err
		}
	}
	db, err := pgx.Connect(ctx, cluster.DSN(database))
	if err != nil {
		return err
	}
	defer db.Close(context.Background())
	for _, s := range services {
		i := slices.IndexFunc(migrations.All, func(set migrations.Set) bool { return set.Schema == s.name })
		if i < 0 {
			return fmt.Errorf("no migrations for %s", s.name)
		}
		if err := kitmigrate.Bootstrap(ctx, db, migrations.All[i], kitmigrate.DefaultRoles(s.name)); err != nil {
			return err
		}
	}
	for _, role := range clusterRoles(services)[1:] {
		if err := kitmigrate.SetPassword(ctx, conn, role, passwords[role]); err != nil {
			return err
		}
	}
	return nil
}

func migrate(ctx context.Context, con *console, binDir string, s service, dsn string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, s.name), "migrate")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "LOG_FORMAT=text")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s migrate: %w\n%s", s.name, err, out)
	}
	con.logf("%s: migrated", s.name)
	return nil
}

// process is a running service binary.
type process struct {
	s   service
	cmd *exec.Cmd
	// serving receives the addresses of the service's own "serving" log
	// line: proof that this process bound them.
	serving chan listening
	// done closes when the process has exited and all its output is read;
	// exitErr is then how it exited.
	done    chan struct{}
	exitErr error

	mu   sync.Mutex
	tail []string // its last lines, for error messages
}

// listening is what a "serving" line says: the bound addresses.
type listening struct{ addr, metricsAddr string }

const tailLines = 20

func startService(con *console, binDir string, s service, dsn string, secrets []string, exited chan<- *process) (*process, error) {
	cmd := exec.Command(filepath.Join(binDir, s.name), "serve")
	// The addresses are per service, so a LISTEN_ADDR in the caller's
	// environment cannot put all three on one port.
	// Everything on localhost: the stack is for this machine only.
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "LOG_FORMAT=text",
		fmt.Sprintf("LISTEN_ADDR=127.0.0.1:%d", s.port), fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", s.metricsPort))
	cmd.Env = append(cmd.Env, secrets...)
	for _, kv := range s.env {
		if name, _, _ := strings.Cut(kv, "="); os.Getenv(name) == "" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Own process group: Ctrl-C reaches only devstack, which then stops
	// each service with one SIGTERM (a second signal would cut it off).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	p := &process{s: s, cmd: cmd, serving: make(chan listening, 1), done: make(chan struct{})}
	go func() {
		prefix := fmt.Sprintf("%-10s| ", s.name)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			con.line(prefix + line)
			p.mu.Lock()
			if p.tail = append(p.tail, line); len(p.tail) > tailLines {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
			if l, ok := parseServing(line); ok {
				select {
				case p.serving <- l:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out) // a line beyond the buffer: keep the pipe drained
		p.exitErr = cmd.Wait()
		close(p.done)
		exited <- p
	}()
	return p, nil
}

var (
	servingText = regexp.MustCompile(`(?:^|\s)msg=serving(?:\s|$)`)
	addrText    = regexp.MustCompile(`(?:^|\s)addr=(\S+)`)
	metricsText = regexp.MustCompile(`(?:^|\s)metrics_addr=(\S+)`)
)

// parseServing recognises the line a server logs once it has bound its
// listeners (kit/server: msg=serving addr=... metrics_addr=...), in the
// text format devstack asks for or in JSON.
func parseServing(line string) (listening, bool) {
	if strings.HasPrefix(line, "{") {
		var l struct {
			Msg         string `json:"msg"`
			Addr        string `json:"addr"`
			MetricsAddr string `json:"metrics_addr"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "serving" || l.Addr == "" {
			return listening{}, false
		}
		return listening{l.Addr, l.MetricsAddr}, true
	}
	if !servingText.MatchString(line) {
		return listening{}, false
	}
	a, m := addrText.FindStringSubmatch(line), metricsText.FindStringSubmatch(line)
	if a == nil || m == nil {
		return listening{}, false
	}
	return listening{a[1], m[1]}, true
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startFailure explains why the process exited during start-up, naming
// the port when one was taken.
func (p *process) startFailure() error {
	p.mu.Lock()
	tail := append([]string(nil), p.tail...)
	p.mu.Unlock()
	s := p.s
	for _, line := range tail {
		if !strings.Contains(line, "address already in use") {
			continue
		}
		for _, c := range []struct {
			port       int
			what, kind string
		}{{s.port, "gRPC", "grpc"}, {s.metricsPort, "metrics", "metrics"}} {
			if strings.Contains(line, ":"+strconv.Itoa(c.port)+":") || strings.Contains(line, ":"+strconv.Itoa(c.port)+" ") {
				return fmt.Errorf("%s could not listen on its %s port %d: another process listens on it.\n%s, or set %s to a free port.\n(%s)",
					s.name, c.what, c.port, anotherRun, portVar(s.name, c.kind), strings.TrimSpace(line))
			}
		}
		return fmt.Errorf("%s could not listen: %s\n%s", s.name, strings.TrimSpace(line), anotherRun)
	}
	last := ""
	if len(tail) > 0 {
		last = ": " + tail[len(tail)-1]
	}
	return fmt.Errorf("%s exited during start-up (%v)%s; see its log lines above", s.name, p.exitErr, last)
}

// waitReady waits until each service's own process has logged that it
// serves on its ports and its health answers SERVING, and checks that
// they are all still running then. Health alone proves nothing: another
// process on the port answers it just as well while ours failed to bind.
func waitReady(ctx context.Context, procs []*process, creds grpc.DialOption, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, p := range procs {
		if err := p.waitReady(ctx, creds); err != nil {
			return err
		}
	}
	for _, p := range procs {
		if p.exited() {
			return p.startFailure()
		}
	}
	return nil
}

func (p *process) waitReady(ctx context.Context, creds grpc.DialOption) error {
	s := p.s
	select {
	case l := <-p.serving:
		if portOf(l.addr) != s.port || portOf(l.metricsAddr) != s.metricsPort {
			return fmt.Errorf("%s serves on %s (metrics %s), not on ports %d and %d", s.name, l.addr, l.metricsAddr, s.port, s.metricsPort)
		}
	case <-p.done:
		return p.startFailure()
	case <-ctx.Done():
		if p.exited() {
			return p.startFailure()
		}
		return fmt.Errorf("%s did not start serving on port %d in time: %w", s.name, s.port, ctx.Err())
	}

	conn, err := grpc.NewClient(s.addr, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := healthgrpc.NewHealthClient(conn)
	for {
		resp, err := client.Check(ctx, &healthgrpc.HealthCheckRequest{Service: s.grpcService})
		if err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING {
			break
		}
		select {
		case <-p.done:
			return p.startFailure()
		case <-ctx.Done():
			if p.exited() {
				return p.startFailure()
			}
			return fmt.Errorf("%s not SERVING on %s (is the database reachable? see its log lines above): %v", s.name, s.addr, errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
	if p.exited() {
		return p.startFailure()
	}
	return nil
}

// stopAll sends SIGTERM to every service and waits for them to finish
// their in-flight calls; one that outlives its own shutdown timeout by far
// is killed.
func stopAll(procs []*process) {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(40 * time.Second)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// console serialises the lines of devstack and of the services.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) line(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintln(c.w, s)
}

func (c *console) logf(format string, args ...any) {
	c.line("devstack  | " + fmt.Sprintf(format, args...))
}

func (c *console) banner(services []service, shellFunctions []string, db string) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nplatforma is up.\n\n")
	for _, s := range services {
		fmt.Fprintf(&b, "  %-11s grpc %s (TLS)   metrics http://%s/metrics\n", s.name, s.addr, s.metricsAddr)
	}
	fmt.Fprintf(&b, "  %-11s %s\n\nTry, in another terminal (w: a worker's certificate, op: an operator's token, adm: an admin's):\n\n", "postgres", db)
	for _, f := range shellFunctions {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	b.WriteString("\n")
	for _, s := range services {
		fmt.Fprintf(&b, "  w %s list\n", s.addr)
	}
	profile, reviewmeta, oplog := services[0].addr, services[1].addr, services[2].addr
	fmt.Fprintf(&b, "  w -d '{\"service\":\"platforma.oplog.v1.OpLogService\"}' %s grpc.health.v1.Health/Check\n", oplog)
	fmt.Fprintf(&b, "  w %s describe platforma.profile.v1.ProfileService\n", profile)
	fmt.Fprintf(&b, "  op -d '{\"grade\":\"STABILITY_GRADE_CRITICAL\"}' %s platforma.profile.v1.ProfileService/ListProfiles\n", profile)
	fmt.Fprintf(&b, "  op %s platforma.reviewmeta.v1.ReviewMetadataService/GetReplyStats\n", reviewmeta)
	fmt.Fprintf(&b, "  op -d '{\"since\":\"%s\",\"until\":\"%s\"}' %s platforma.oplog.v1.OpLogService/GetOperationStats\n",
		time.Now().UTC().Add(-24*time.Hour).Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339), oplog)
	fmt.Fprintf(&b, "  adm %s platforma.oplog.v1.OpLogService/ListLoginDeadLetters\n", oplog)
	fmt.Fprintf(&b, "  (more in README.md)\n")
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		fmt.Fprintf(&b, "\nTraces are off: start with OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 to send them to a collector (README.md).\n")
	} else {
		fmt.Fprintf(&b, "\nTraces go to the OTLP collector in OTEL_EXPORTER_OTLP_ENDPOINT.\n")
	}
	fmt.Fprintf(&b, "\nCtrl-C stops the services and the database.\n")
	c.line(b.String())
}
