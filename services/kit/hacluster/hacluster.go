// Package hacluster runs a local high-availability PostgreSQL cluster for
// tests and `make run-ha`: a single-node etcd and three Patroni nodes, each
// managing its own Postgres (one leader, two streaming replicas), all on
// 127.0.0.1 in one directory.
//
// By default the cluster uses Patroni's synchronous_mode with
// synchronous_mode_strict: a commit returns only once one synchronous
// standby has it, and with no synchronous standby left writes stop rather
// than go on unreplicated. Options.Async switches both off (Patroni's
// default asynchronous replication, maximum_lag_on_failover 1 MiB unless
// Options.MaxLagOnFailover).
//
// The cluster is throwaway: pg_hba.conf trusts every local and 127.0.0.1
// connection, replication included (the roles have passwords, which
// Patroni wants, but they are never asked for). Do not expose its ports.
//
// Patroni and Postgres refuse to run as root: when this process is root
// they run as the "postgres" OS user, which Debian's postgresql package
// creates. The binaries are Debian's patroni and etcd-server packages
// (see InstallHint) and the Postgres server binaries pgcluster finds.
package hacluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/platforma/platforma/services/kit/pgcluster"
)

// InstallHint tells a person how to get what this package runs.
const InstallHint = "patroni and etcd are required for the high-availability cluster " +
	"(Debian/Ubuntu: apt-get install -y --no-install-recommends patroni etcd-server; " +
	"the package may start a system etcd on 2379/2380, which this harness does not use)"

// Superuser is the cluster's superuser; Replicator its replication role.
const (
	Superuser  = pgcluster.Superuser
	Replicator = "replicator"
)

// Options describe a cluster.
type Options struct {
	// Dir holds everything: etcd's data, each node's data directory,
	// configuration and log. It must exist.
	Dir string
	// Nodes is the number of Patroni nodes; default 3.
	Nodes int
	// Async turns synchronous_mode (and strict) off.
	Async bool
	// Port returns a free TCP port on 127.0.0.1; default: one the kernel
	// picks. 2 + 2 × Nodes are needed (etcd client and peer; per node the
	// REST API and Postgres).
	Port func() (int, error)
	// Scope is the Patroni cluster name; default "platforma-ha".
	Scope string
	// Settings are extra Postgres parameters (bootstrap.dcs).
	Settings map[string]any
	// MaxLagOnFailover is Patroni's maximum_lag_on_failover in bytes: a
	// replica further behind the last leader position Patroni recorded
	// is not promoted. Default 1 MiB (Patroni's).
	MaxLagOnFailover int
}

// Node is one Patroni node and its Postgres.
type Node struct {
	Name    string
	PGPort  int
	APIPort int
	DataDir string
	dir     string
	proc    *process
}

// Cluster is etcd and the Patroni nodes.
type Cluster struct {
	opts       Options
	owner      *syscall.Credential
	etcd       *process
	etcdClient int
	Nodes      []*Node
	http       *http.Client
}

type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Check reports whether patroni and etcd are installed.
func Check() error {
	for _, name := range []string{"patroni", "etcd"} {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("%s not found on PATH: %s", name, InstallHint)
		}
	}
	return nil
}

// Start starts etcd and the Patroni nodes and waits until the cluster is
// healthy (Healthy). On an error it stops what it started.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	pgBin, err := pgcluster.FindBinaries()
	if err != nil {
		return nil, err
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Scope == "" {
		opts.Scope = "platforma-ha"
	}
	if opts.Port == nil {
		opts.Port = kernelPort
	}
	if opts.MaxLagOnFailover == 0 {
		opts.MaxLagOnFailover = 1 << 20
	}
	c = &Cluster{opts: opts, http: &http.Client{Timeout: 2 * time.Second}}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, and Patroni and PostgreSQL refuse to: need an OS user named postgres: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		c.owner = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		// The nodes reach their directories through Dir.
		_ = os.Chmod(opts.Dir, 0o755)
	}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = c.Stop(stopCtx)
			c = nil
		}
	}()
	if err := c.startEtcd(ctx); err != nil {
		return c, err
	}
	for i := 1; i <= opts.Nodes; i++ {
		n := &Node{Name: fmt.Sprintf("pg%d", i), dir: filepath.Join(opts.Dir, fmt.Sprintf("pg%d", i))}
		n.DataDir = filepath.Join(n.dir, "data")
		if n.PGPort, err = opts.Port(); err != nil {
			return c, err
		}
		if n.APIPort, err = opts.Port(); err != nil {
			return c, err
		}
		if err := c.writeConfig(n, pgBin); err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	// The first node bootstraps alone (it takes the initialize key); the
	// others clone it with pg_basebackup once it leads.
	for i, n := range c.Nodes {
		if err := c.startNode(n); err != nil {
			return c, err
		}
		if i == 0 {
			if err := c.waitFor(ctx, 2*time.Minute, "the first node to bootstrap and lead", func() error {
				_, err := c.Leader(ctx)
				return err
			}); err != nil {
				return c, err
			}
		}
	}
	if err := c.WaitHealthy(ctx, 3*time.Minute); err != nil {
		return c, err
	}
	return c, nil
}

func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) chown(path string) error {
	if c.owner == nil {
		return nil
	}
	return os.Chown(path, int(c.owner.Uid), int(c.owner.Gid))
}

// spawn starts name with args, its output appended to logPath; asOwner
// runs it as the postgres OS user when we are root.
func (c *Cluster) spawn(name string, args []string, env []string, logPath string, asOwner bool) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own descriptor
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	// Own process group: a Ctrl-C meant for us reaches it only through
	// Stop. SIGTERM if we die: Patroni then stops its Postgres.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if asOwner {
		cmd.SysProcAttr.Credential = c.owner
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	client, err := c.opts.Port()
	if err != nil {
		return err
	}
	peer, err := c.opts.Port()
	if err != nil {
		return err
	}
	c.etcdClient = client
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	c.etcd, err = c.spawn("etcd", []string{
		"--name", "etcd0",
		"--data-dir", filepath.Join(c.opts.Dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "etcd0=" + peerURL, "--initial-cluster-state", "new",
		"--initial-cluster-token", c.opts.Scope,
		"--logger", "zap", "--log-level", "warn",
	}, nil, filepath.Join(c.opts.Dir, "etcd.log"), false)
	if err != nil {
		return err
	}
	return c.waitFor(ctx, time.Minute, "etcd", func() error {
		if !c.etcd.running() {
			return errExited{"etcd", c.etcd.log}
		}
		resp, err := c.http.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"true"`) {
			return fmt.Errorf("etcd health: %s", b)
		}
		return nil
	})
}

type errExited struct{ name, log string }

func (e errExited) Error() string {
	return fmt.Sprintf("%s exited; the end of %s:\n%s", e.name, e.log, tail(e.log, 2048))
}

// writeConfig writes n's Patroni configuration. JSON is YAML.
func (c *Cluster) writeConfig(n *Node, pgBin string) error {
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return err
	}
	if err := c.chown(n.dir); err != nil {
		return err
	}
	sync := !c.opts.Async
	params := map[string]any{
		"max_connections":       200,
		"wal_level":             "replica",
		"hot_standby":           "on",
		"max_wal_senders":       10,
		"max_replication_slots": 10,
		"wal_keep_size":         "256MB",
		"wal_log_hints":         "on",
	}
	for k, v := range c.opts.Settings {
		params[k] = v
	}
	addr := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	cfg := map[string]any{
		"scope":     c.opts.Scope,
		"namespace": "/platforma/",
		"name":      n.Name,
		"log":       map[string]any{"level": "INFO"},
		"restapi":   map[string]any{"listen": addr(n.APIPort), "connect_address": addr(n.APIPort)},
		"etcd3":     map[string]any{"hosts": []string{addr(c.etcdClient)}},
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				// Fast detection for a local cluster: the leader key
				// lives 10 s, every node runs its loop each second.
				"ttl": 10, "loop_wait": 1, "retry_timeout": 3,
				"maximum_lag_on_failover": c.opts.MaxLagOnFailover,
				// A crashed primary is failed over at once rather than
				// restarted in place (crash recovery) as the leader.
				"primary_start_timeout":   0,
				"synchronous_mode":        sync,
				"synchronous_mode_strict": sync,
				"postgresql": map[string]any{
					"use_pg_rewind": true,
					"use_slots":     true,
					"parameters":    params,
				},
			},
			"initdb": []any{map[string]string{"encoding": "UTF8"}, map[string]string{"locale": "C"}},
		},
		"postgresql": map[string]any{
			"listen":          addr(n.PGPort),
			"connect_address": addr(n.PGPort),
			"data_dir":        n.DataDir,
			"bin_dir":         pgBin,
			"pgpass":          filepath.Join(n.dir, "pgpass"),
			"authentication": map[string]any{
				"superuser":   map[string]string{"username": Superuser, "password": "postgres"},
				"replication": map[string]string{"username": Replicator, "password": "replicator"},
			},
			"parameters": map[string]any{"unix_socket_directories": n.dir},
			// Throwaway: every local connection is trusted.
			"pg_hba": []string{
				"local all all trust",
				"local replication all trust",
				"host all all 127.0.0.1/32 trust",
				"host replication all 127.0.0.1/32 trust",
			},
		},
		"tags": map[string]any{"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	path := n.ConfigFile()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	return c.chown(path)
}

// ConfigFile is n's Patroni configuration (patronictl -c <it> list).
func (n *Node) ConfigFile() string { return filepath.Join(n.dir, "patroni.yml") }

// LogFile is n's Patroni (and Postgres) log.
func (n *Node) LogFile() string { return filepath.Join(n.dir, "patroni.log") }

func (c *Cluster) startNode(n *Node) error {
	p, err := c.spawn("patroni", []string{n.ConfigFile()}, []string{"HOME=" + n.dir}, n.LogFile(), true)
	if err != nil {
		return err
	}
	n.proc = p
	return c.chown(n.LogFile())
}

func (c *Cluster) waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var exited errExited
		if errors.As(err, &exited) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s waiting for %s: %w", timeout, what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Leader is the node whose REST API answers /leader with 200 (Patroni
// holds the leader key and runs Postgres as the primary).
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	for _, n := range c.Nodes {
		if n.proc == nil || !n.proc.running() {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/leader", n.APIPort), nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return n, nil
		}
	}
	return nil, errors.New("no node is the leader")
}

// Member is one node as Patroni's /cluster reports it.
type Member struct {
	Name     string `json:"name"`
	Role     string `json:"role"` // leader, replica, sync_standby
	State    string `json:"state"`
	Timeline int    `json:"timeline"`
	Lag      any    `json:"lag"`
}

// Members asks any node's REST API for the cluster's members.
func (c *Cluster) Members(ctx context.Context) ([]Member, error) {
	var last error = errors.New("no node running")
	for _, n := range c.Nodes {
		if n.proc == nil || !n.proc.running() {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/cluster", n.APIPort), nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			last = err
			continue
		}
		var body struct {
			Members []Member `json:"members"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			last = err
			continue
		}
		return body.Members, nil
	}
	return nil, last
}

// Replication is the leader's view of its standbys.
type Replication struct {
	Leader    string
	Streaming int // standbys in state streaming
	Sync      int // of which synchronous
}

// Replication asks the leader's pg_stat_replication.
func (c *Cluster) Replication(ctx context.Context) (Replication, error) {
	leader, err := c.Leader(ctx)
	if err != nil {
		return Replication{}, err
	}
	conn, err := pgx.Connect(ctx, leader.DSN("postgres"))
	if err != nil {
		return Replication{}, err
	}
	defer conn.Close(context.Background())
	r := Replication{Leader: leader.Name}
	err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'streaming'),
		count(*) FILTER (WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum'))
		FROM pg_stat_replication`).Scan(&r.Streaming, &r.Sync)
	return r, err
}

// Healthy reports nil when a leader streams to every other node and, in
// synchronous mode, one of them is synchronous.
func (c *Cluster) Healthy(ctx context.Context) error {
	r, err := c.Replication(ctx)
	if err != nil {
		return err
	}
	if r.Streaming < len(c.Nodes)-1 {
		return fmt.Errorf("leader %s streams to %d of %d replicas", r.Leader, r.Streaming, len(c.Nodes)-1)
	}
	if !c.opts.Async && r.Sync < 1 {
		return fmt.Errorf("leader %s has no synchronous standby yet", r.Leader)
	}
	return nil
}

// WaitHealthy waits until Healthy.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	return c.waitFor(ctx, timeout, "a leader and streaming replicas", func() error {
		for _, n := range c.Nodes {
			if n.proc != nil && !n.proc.running() {
				return errExited{"patroni " + n.Name, n.LogFile()}
			}
		}
		return c.Healthy(ctx)
	})
}

// PostmasterPid is the pid of n's Postgres postmaster, from the first
// line of its data directory's postmaster.pid.
func (n *Node) PostmasterPid() (int, error) {
	b, err := os.ReadFile(filepath.Join(n.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// DSN connects to n alone as the superuser, over TCP.
func (n *Node) DSN(dbname string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable connect_timeout=5", n.PGPort, Superuser, dbname)
}

// URL is the multi-host URL of database dbname as user: pgx tries every
// node and keeps the one that accepts writes (target_session_attrs
// read-write), so after a failover new connections find the new leader.
func (c *Cluster) URL(user, dbname string) string {
	hosts := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", n.PGPort)
	}
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: strings.Join(hosts, ","), Path: "/" + dbname,
		RawQuery: "sslmode=disable&target_session_attrs=read-write&connect_timeout=5"}
	return u.String()
}

// Exec runs sql as the superuser in dbname on the leader.
func (c *Cluster) Exec(ctx context.Context, dbname, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL(Superuser, dbname))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop stops every Patroni node (SIGTERM: Patroni shuts its Postgres
// down), then etcd; what does not exit in time is killed, postmasters
// included.
func (c *Cluster) Stop(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		if n.proc == nil {
			continue
		}
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			stopProcess(ctx, n.proc)
			// Patroni starts the postmaster detached from itself.
			if pid, err := n.PostmasterPid(); err == nil && pid > 0 && syscall.Kill(pid, 0) == nil {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
			}
		}(n)
	}
	wg.Wait()
	if c.etcd != nil {
		stopProcess(ctx, c.etcd)
	}
	return nil
}

func stopProcess(ctx context.Context, p *process) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
