// Command devstack is `make run`: the whole platforma stack on one machine.
//
// Without DATABASE_URL it creates (the first time) and starts a Postgres
// cluster in .data/ from the machine's Postgres binaries, with one database
// and one role per service, so each service owns its schema and cannot touch
// the others'. It then migrates and starts the three binaries, waits until
// their health is SERVING and prints commands to try. Ctrl-C stops the
// services gracefully, then the cluster.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

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

// defaultPorts are the ones DESIGN.md and the README give.
var defaultPorts = ports{grpc: [3]int{50051, 50052, 50053}, metrics: [3]int{9451, 9452, 9453}}

// stackServices describes the three services on p.
func stackServices(p ports) []service {
	s := []service{
		{name: "profile", grpcService: "platforma.profile.v1.ProfileService"},
		{name: "reviewmeta", grpcService: "platforma.reviewmeta.v1.ReviewMetadataService"},
		{name: "oplog", grpcService: "platforma.oplog.v1.OpLogService"},
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

func main() {
	binDir := flag.String("bin", "bin", "directory with the service binaries")
	dataDir := flag.String("data", ".data", "directory of the local Postgres cluster")
	grpcurl := flag.String("grpcurl", "grpcurl", "grpcurl binary, for the printed examples")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stackServices(defaultPorts), *binDir, *dataDir, *grpcurl); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, services []service, binDir, dataDir, grpcurl string) error {
	dsns := map[string]string{}
	dbDescription := "DATABASE_URL"
	if url := os.Getenv("DATABASE_URL"); url != "" {
		for _, s := range services {
			dsns[s.name] = url
		}
	} else {
		cluster, err := startCluster(ctx, dataDir)
		if err != nil {
			return err
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			logf("stopping postgres")
			if err := cluster.Stop(stopCtx); err != nil {
				logf("stop postgres: %v", err)
			}
		}()
		if err := bootstrap(ctx, cluster, services); err != nil {
			return err
		}
		for _, s := range services {
			dsns[s.name] = cluster.TCPURL(s.name, database)
		}
		dbDescription = fmt.Sprintf("%s (data in %s)", cluster.TCPURL(pgcluster.Superuser, database), dataDir)
	}

	for _, s := range services {
		if err := migrate(ctx, binDir, s, dsns[s.name]); err != nil {
			return stoppedOr(ctx, err)
		}
	}

	var procs []*process
	exited := make(chan string, len(services))
	defer func() { stopAll(procs) }()
	for _, s := range services {
		p, err := startService(binDir, s, dsns[s.name], exited)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	if err := waitServing(ctx, services, exited); err != nil {
		return stoppedOr(ctx, err)
	}
	printBanner(services, grpcurl, dbDescription)

	select {
	case <-ctx.Done():
		logf("stopping services")
		return nil
	case name := <-exited:
		return fmt.Errorf("%s exited unexpectedly; see its log lines above", name)
	}
}

// stoppedOr hides err when it only says that Ctrl-C came during start-up.
func stoppedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		logf("stopping")
		return nil
	}
	return err
}

func startCluster(ctx context.Context, dataDir string) (*pgcluster.Cluster, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	port := 55432
	if p := os.Getenv("PG_PORT"); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("PG_PORT=%q is not a port number", p)
		}
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, err
	}
	logf("starting postgres in %s on 127.0.0.1:%d (log: %s)", abs, port, filepath.Join(abs, "postgres.log"))
	cluster, err := pgcluster.New(ctx, pgcluster.Options{
		DataDir:           filepath.Join(abs, "pg"),
		SocketDir:         filepath.Join(abs, "run"),
		LogFile:           filepath.Join(abs, "postgres.log"),
		Port:              port,
		Settings:          map[string]string{"max_connections": "200"},
		ParentDeathSignal: syscall.SIGINT,
	})
	if err != nil {
		return nil, err
	}
	if err := cluster.Start(ctx); err != nil {
		return nil, fmt.Errorf("%w\n(is another `make run` still running, or is port %d taken? PG_PORT picks another port)", err, port)
	}
	return cluster, nil
}

// bootstrap creates the database and one login role per service, each
// allowed to create its own schema. Idempotent.
func bootstrap(ctx context.Context, cluster *pgcluster.Cluster, services []service) error {
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
	for _, s := range services {
		role := pgx.Identifier{s.name}.Sanitize()
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", s.name).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := conn.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
				return err
			}
		}
		if _, err := conn.Exec(ctx, "GRANT CONNECT, CREATE ON DATABASE "+database+" TO "+role); err != nil {
			return err
		}
	}
	return nil
}

func migrate(ctx context.Context, binDir string, s service, dsn string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, s.name), "migrate")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "LOG_FORMAT=text")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s migrate: %w\n%s", s.name, err, out)
	}
	logf("%s: migrated", s.name)
	return nil
}

// process is a running service binary; done closes when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startService(binDir string, s service, dsn string, exited chan<- string) (*process, error) {
	cmd := exec.Command(filepath.Join(binDir, s.name), "serve")
	// The addresses are per service, so a LISTEN_ADDR in the caller's
	// environment cannot put all three on one port.
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "LOG_FORMAT=text",
		fmt.Sprintf("LISTEN_ADDR=:%d", s.port), fmt.Sprintf("METRICS_ADDR=:%d", s.metricsPort))
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
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		prefixLines(os.Stdout, out, fmt.Sprintf("%-10s| ", s.name))
		_ = cmd.Wait()
		close(p.done)
		exited <- s.name
	}()
	return p, nil
}

var stdoutMu sync.Mutex

func prefixLines(w io.Writer, r io.Reader, prefix string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		stdoutMu.Lock()
		fmt.Fprintln(w, prefix+sc.Text())
		stdoutMu.Unlock()
	}
}

func logf(format string, args ...any) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	fmt.Printf("devstack  | "+format+"\n", args...)
}

// waitServing waits until every service's health check answers SERVING.
func waitServing(ctx context.Context, services []service, exited <-chan string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, s := range services {
		conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		client := healthgrpc.NewHealthClient(conn)
		for {
			resp, err := client.Check(ctx, &healthgrpc.HealthCheckRequest{Service: s.grpcService})
			if err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING {
				break
			}
			select {
			case name := <-exited:
				_ = conn.Close()
				return fmt.Errorf("%s exited during start-up; see its log lines above", name)
			case <-ctx.Done():
				_ = conn.Close()
				return fmt.Errorf("%s not SERVING on %s: %v", s.name, s.addr, errors.Join(err, ctx.Err()))
			case <-time.After(100 * time.Millisecond):
			}
		}
		_ = conn.Close()
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

func printBanner(services []service, grpcurl, db string) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	fmt.Printf("\nplatforma is up.\n\n")
	for _, s := range services {
		fmt.Printf("  %-11s grpc %s   metrics http://%s/metrics\n", s.name, s.addr, s.metricsAddr)
	}
	fmt.Printf("  %-11s %s\n\nTry, in another terminal:\n\n", "postgres", db)
	for _, s := range services {
		fmt.Printf("  %s -plaintext %s list\n", grpcurl, s.addr)
	}
	profile, reviewmeta, oplog := services[0].addr, services[1].addr, services[2].addr
	fmt.Printf("  %s -plaintext -d '{\"service\":\"platforma.oplog.v1.OpLogService\"}' %s grpc.health.v1.Health/Check\n", grpcurl, oplog)
	fmt.Printf("  %s -plaintext %s describe platforma.profile.v1.ProfileService\n", grpcurl, profile)
	fmt.Printf("  %s -plaintext -d '{\"grade\":\"STABILITY_GRADE_CRITICAL\"}' %s platforma.profile.v1.ProfileService/ListProfiles\n", grpcurl, profile)
	fmt.Printf("  %s -plaintext %s platforma.reviewmeta.v1.ReviewMetadataService/GetReplyStats\n", grpcurl, reviewmeta)
	fmt.Printf("  %s -plaintext -d '{\"since\":\"%s\",\"until\":\"%s\"}' %s platforma.oplog.v1.OpLogService/GetOperationStats\n",
		grpcurl, time.Now().UTC().Add(-24*time.Hour).Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339), oplog)
	fmt.Printf("  (more in README.md)\n")
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		fmt.Printf("\nTraces are off: start with OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 to send them to a collector (README.md).\n")
	} else {
		fmt.Printf("\nTraces go to the OTLP collector in OTEL_EXPORTER_OTLP_ENDPOINT.\n")
	}
	fmt.Printf("\nCtrl-C stops the services and the database.\n\n")
}
