// Package pgcluster runs a PostgreSQL cluster from the machine's own server
// binaries (initdb, postgres): the throwaway clusters of the test harness
// and the persistent one of `make run`.
//
// initdb and postgres refuse to run as root. When this process is root (as
// in CI) the cluster runs as the "postgres" OS user, which Debian's
// postgresql package creates.
//
// Throwaway clusters trust every local connection, replication included,
// so they can have streaming standbys (NewStandby). A cluster with a
// Password (the one of `make run`) asks every connection, over the Unix
// socket and TCP alike, for a password (scram-sha-256).
package pgcluster

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
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
	// Password, when set, is the superuser's password, and every
	// connection must give its role's password (scram-sha-256 for local
	// and host lines; see PasswordHBA). A cluster made earlier with trust
	// authentication is converted by New: its superuser gets Password (in
	// single-user mode, before the server accepts any connection) and
	// pg_hba.conf is replaced. Empty: every local connection is trusted,
	// as throwaway clusters are.
	Password string
	// ResetPassword makes New set the superuser's password to Password
	// on an existing cluster even when it already asks for passwords
	// (whoever started it lost the old one).
	ResetPassword bool
}

// PasswordHBA is the pg_hba.conf of a cluster with a Password: a
// password for every connection, no trust, no peer, no replication.
const PasswordHBA = `# Written by platforma's pgcluster: every connection gives its role's password.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
`

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
		if opts.Password != "" {
			if err := c.writeHBA(); err != nil {
				return nil, err
			}
		}
	} else if opts.Password != "" {
		hba, err := os.ReadFile(c.hbaFile())
		if err != nil {
			return nil, err
		}
		if opts.ResetPassword || string(hba) != PasswordHBA {
			// Before the server starts: nobody can connect meanwhile.
			if err := c.setSuperuserPassword(ctx); err != nil {
				return nil, err
			}
			if err := c.writeHBA(); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

func (c *Cluster) hbaFile() string { return filepath.Join(c.opts.DataDir, "pg_hba.conf") }

// writeHBA replaces pg_hba.conf with PasswordHBA.
func (c *Cluster) writeHBA() error {
	tmp := c.hbaFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(PasswordHBA), 0o600); err != nil {
		return err
	}
	if err := c.chown(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, c.hbaFile())
}

// setSuperuserPassword sets the superuser's password with the server
// stopped, through a single-user backend (no network, no socket).
func (c *Cluster) setSuperuserPassword(ctx context.Context) error {
	verifier, err := ScramVerifier(c.opts.Password)
	if err != nil {
		return err
	}
	cmd := c.command(ctx, "postgres", "--single", "-D", c.opts.DataDir, "-c", "exit_on_error=on", "postgres")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'\n", Superuser, verifier))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("set the superuser's password of %s (single-user mode; is its server still running?): %w\n%s",
			c.opts.DataDir, err, bytes.TrimSpace(out))
	}
	return nil
}

// ScramVerifier returns what Postgres stores for password with
// scram-sha-256 (as libpq's PQencryptPasswordConn computes it), for
// CREATE/ALTER ROLE ... PASSWORD: the password itself never reaches the
// server or its logs. password must be ASCII (no SASLprep is applied).
func ScramVerifier(password string) (string, error) {
	for _, r := range password {
		if r > 0x7f {
			return "", errors.New("pgcluster: only ASCII passwords are supported")
		}
	}
	const iterations = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key"))), nil
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
	auth := "trust"
	if c.opts.Password != "" {
		auth = "scram-sha-256"
	}
	args := []string{
		"--pgdata", c.opts.DataDir,
		"--username", Superuser,
		"--auth", auth,
		"--encoding", "UTF8",
		"--no-locale",
		"--no-sync",
		"--no-instructions",
	}
	if c.opts.Password != "" {
		// The password file sits in the socket directory, which only the
		// cluster's owner can read, for the moment initdb runs.
		pwfile := filepath.Join(c.opts.SocketDir, "initdb.pw")
		if err := os.WriteFile(pwfile, []byte(c.opts.Password+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(pwfile)
		if err := c.chown(pwfile); err != nil {
			return err
		}
		args = append(args, "--pwfile", pwfile)
	}
	cmd := c.command(ctx, "initdb", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", c.opts.DataDir, err, out)
	}
	return nil
}

// NewStandby prepares a streaming standby of c, which must be running:
// pg_basebackup copies c's data directory into opts.DataDir (which must
// hold no cluster yet) with the WAL that makes the copy consistent, and
// writes standby.signal and primary_conninfo, so that once started
// (Start) the standby replays what c writes, read-only, over a
// replication connection to c's Unix socket. opts.Settings should include
// c's max_connections at least (a hot standby refuses to start with
// fewer). Only a cluster without a Password can have one: PasswordHBA
// allows no replication connection, while throwaway clusters keep
// initdb's pg_hba.conf, which trusts local ones (max_wal_senders and
// wal_level are Postgres's defaults, 10 and replica).
func (c *Cluster) NewStandby(ctx context.Context, opts Options) (*Cluster, error) {
	switch {
	case c.opts.Password != "":
		return nil, errors.New("pgcluster: a cluster with a Password allows no replication connection, so it can have no standby")
	case !c.Running():
		return nil, errors.New("pgcluster: a standby needs its primary running")
	case opts.DataDir == "":
		return nil, errors.New("pgcluster: DataDir is required")
	case opts.Password != "":
		return nil, errors.New("pgcluster: a standby has its primary's roles and passwords: no Password of its own")
	}
	if opts.SocketDir == "" {
		opts.SocketDir = opts.DataDir + ".run"
	}
	if opts.LogFile == "" {
		opts.LogFile = opts.DataDir + ".log"
	}
	s := &Cluster{opts: opts, binDir: c.binDir, owner: c.owner, fixedPort: opts.Port != 0}
	if _, err := os.Stat(filepath.Join(opts.DataDir, "PG_VERSION")); err == nil {
		return nil, fmt.Errorf("pgcluster: %s already holds a cluster", opts.DataDir)
	}
	if err := s.prepareDirs(); err != nil {
		return nil, err
	}
	cmd := s.command(ctx, "pg_basebackup",
		"--pgdata", opts.DataDir,
		"--host", c.opts.SocketDir,
		"--port", strconv.Itoa(c.opts.Port),
		"--username", Superuser,
		"--no-password",
		"--wal-method=stream",
		"--write-recovery-conf",
		// At once, not spread over checkpoint_completion_target.
		"--checkpoint=fast",
		"--no-sync",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_basebackup into %s: %w\n%s", opts.DataDir, err, bytes.TrimSpace(out))
	}
	return s, nil
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

// DSN is a connection string for database dbname as the superuser (with
// its password, if the cluster has one), over the Unix socket (no port
// races, no TCP overhead).
func (c *Cluster) DSN(dbname string) string {
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.opts.SocketDir, c.opts.Port, Superuser, dbname)
	if c.opts.Password != "" {
		dsn += " password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(c.opts.Password) + "'"
	}
	return dsn
}

// SocketDir is the directory of the server's Unix socket.
func (c *Cluster) SocketDir() string { return c.opts.SocketDir }

// TCPURL is a postgres:// URL for database dbname as user, over TCP, for
// humans and tools outside this process. It carries no password.
func (c *Cluster) TCPURL(user, dbname string) string {
	return c.URL(user, "", dbname)
}

// URL is TCPURL with user's password ("" for none).
func (c *Cluster) URL(user, password, dbname string) string {
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: fmt.Sprintf("127.0.0.1:%d", c.opts.Port), Path: "/" + dbname, RawQuery: "sslmode=disable"}
	if password != "" {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
