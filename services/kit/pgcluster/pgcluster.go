// Package pgcluster runs a PostgreSQL cluster from the machine's own server
// binaries (initdb, postgres): the throwaway clusters of the test harness
// and the persistent one of `make run`.
//
// initdb and postgres refuse to run as root. When this process is root (as
// in CI) the cluster runs as the "postgres" OS user, which Debian's
// postgresql package creates.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Superuser is the name of the bootstrap superuser of every cluster made here.
const Superuser = "postgres"

// InstallHint tells a person how to get the binaries this package needs.
const InstallHint = "PostgreSQL server binaries (initdb, postgres) were not found in $PG_BIN, on PATH " +
	"or in /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: apt-get install -y postgresql; " +
	"macOS: brew install postgresql@15), point PG_BIN at their directory, " +
	"or set DATABASE_URL to a server you run yourself"

// FindBinaries returns the directory holding initdb and postgres: $PG_BIN,
// else the directory of initdb on PATH (symlinks resolved), else the newest
// /usr/lib/postgresql/<version>/bin.
func FindBinaries() (string, error) {
	if dir := os.Getenv("PG_BIN"); dir != "" {
		if hasBinaries(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("PG_BIN=%s does not contain initdb and postgres", dir)
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && hasBinaries(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	for _, dir := range matches {
		if hasBinaries(dir) {
			return dir, nil
		}
	}
	return "", errors.New(InstallHint)
}

func hasBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// versionOf extracts 15 from /usr/lib/postgresql/15/bin.
func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// Options describe a cluster.
type Options struct {
	// DataDir is the cluster's data directory. initdb runs when it holds no
	// cluster yet.
	DataDir string
	// SocketDir holds the Unix socket; default: DataDir + ".run".
	SocketDir string
	// Port for TCP on 127.0.0.1; 0 picks a free one.
	Port int
	// Settings are extra server settings (-c name=value).
	Settings map[string]string
	// LogFile receives the server's output; default: DataDir + ".log".
	LogFile string
	// ParentDeathSignal is sent to the server if this process dies without
	// stopping it: SIGQUIT (immediate shutdown) for throwaway clusters,
	// SIGINT (fast shutdown) for ones whose data matters. 0 disables it.
	ParentDeathSignal syscall.Signal
}

// Cluster is one PostgreSQL server process and its data directory.
type Cluster struct {
	opts      Options
	binDir    string
	owner     *syscall.Credential // nil unless running as root
	cmd       *exec.Cmd
	exited    chan struct{}
	fixedPort bool
}

// New prepares a cluster: finds the binaries and, when DataDir holds no
// cluster yet, runs initdb. It does not start the server.
func New(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.DataDir == "" {
		return nil, errors.New("pgcluster: DataDir is required")
	}
	binDir, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	if opts.SocketDir == "" {
		opts.SocketDir = opts.DataDir + ".run"
	}
	if opts.LogFile == "" {
		opts.LogFile = opts.DataDir + ".log"
	}
	c := &Cluster{opts: opts, binDir: binDir, fixedPort: opts.Port != 0}
	if os.Geteuid() == 0 {
		if c.owner, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	if err := c.prepareDirs(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(opts.DataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// postgresUser is who runs the server when this process is root.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to: need an OS user named postgres to run it as (apt-get install -y postgresql creates one): %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (c *Cluster) prepareDirs() error {
	for _, dir := range []string{c.opts.DataDir, c.opts.SocketDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := c.chown(dir); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(c.opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return c.chown(c.opts.LogFile)
}

func (c *Cluster) chown(path string) error {
	if c.owner == nil {
		return nil
	}
	return os.Chown(path, int(c.owner.Uid), int(c.owner.Gid))
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.owner}
	return cmd
}

func (c *Cluster) initdb(ctx context.Context) error {
	cmd := c.command(ctx, "initdb",
		"--pgdata", c.opts.DataDir,
		"--username", Superuser,
		"--auth", "trust",
		"--encoding", "UTF8",
		"--no-locale",
		"--no-sync",
		"--no-instructions",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", c.opts.DataDir, err, out)
	}
	return nil
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	if c.Running() {
		return errors.New("pgcluster: already running")
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if !c.fixedPort {
			if c.opts.Port, err = freePort(); err != nil {
				return err
			}
		}
		if err = c.start(ctx); err == nil {
			// Restarts keep the port: clients hold DSNs with it.
			c.fixedPort = true
			return nil
		}
		if c.fixedPort || !errors.Is(err, errExitedEarly) {
			return err
		}
		// Another process took the port between freePort and bind: retry.
	}
	return err
}

var errExitedEarly = errors.New("postgres exited during start-up")

func (c *Cluster) start(ctx context.Context) error {
	log, err := os.OpenFile(c.opts.LogFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer log.Close() // the child keeps its own descriptor

	args := []string{
		"-D", c.opts.DataDir,
		"-p", strconv.Itoa(c.opts.Port),
		"-k", c.opts.SocketDir,
		"-c", "listen_addresses=127.0.0.1",
	}
	keys := make([]string, 0, len(c.opts.Settings))
	for k := range c.opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+c.opts.Settings[k])
	}
	// Not CommandContext: the server outlives the start-up context.
	cmd := c.command(context.Background(), "postgres", args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr.Pdeathsig = c.opts.ParentDeathSignal
	// Own process group: a Ctrl-C meant for us is not also a signal to the
	// server; we stop it in order, after the services that use it.
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.cmd, c.exited = cmd, exited

	if err := c.waitReady(ctx); err != nil {
		c.kill()
		return err
	}
	return nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		conn, err := pgconn.Connect(ctx, c.DSN("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-c.exited:
			return fmt.Errorf("%w: %s", errExitedEarly, c.logTail())
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready: %w: %s", err, c.logTail())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// logTail returns the end of the server log, for error messages.
func (c *Cluster) logTail() string {
	f, err := os.Open(c.opts.LogFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 2048 {
		_, _ = f.Seek(-2048, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// Stop shuts the server down (fast shutdown: open sessions are ended) and
// waits for it to exit. The data directory is kept; Start starts it again.
func (c *Cluster) Stop(ctx context.Context) error {
	if !c.Running() {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
		return nil
	case <-ctx.Done():
		c.kill()
		return fmt.Errorf("postgres did not stop in time, killed: %w", ctx.Err())
	}
}

func (c *Cluster) kill() {
	if c.cmd != nil && c.cmd.Process != nil {
		// Immediate shutdown: the postmaster takes its children with it.
		_ = c.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
}

// Running reports whether the server process is alive.
func (c *Cluster) Running() bool {
	if c.exited == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// Pid is the server's process id, 0 when it never started.
func (c *Cluster) Pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Port is the TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.opts.Port }

// DataDir is the data directory.
func (c *Cluster) DataDir() string { return c.opts.DataDir }

// DSN is a connection string for database dbname as the superuser, over
// the Unix socket (no port races, no TCP overhead).
func (c *Cluster) DSN(dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.opts.SocketDir, c.opts.Port, Superuser, dbname)
}

// TCPURL is a postgres:// URL for database dbname as user, over TCP, for
// humans and tools outside this process.
func (c *Cluster) TCPURL(user, dbname string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", user, c.opts.Port, dbname)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
