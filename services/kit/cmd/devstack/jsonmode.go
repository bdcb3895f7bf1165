package main

// -json: the stack for a test harness in another language (the
// TypeScript client's tests, clients/ts). The harness starts
// `devstack -json -bin bin -data <temp dir>`, reads one JSON line from
// stdout (a stackDescription), and closes stdin to stop everything, as
// Ctrl-C does. Ports not set in the environment are chosen free, so
// parallel harnesses and a `make run` do not collide. The services' output
// and devstack's own lines go to stderr.
//
// While it runs, the harness may write commands to stdin, one per line,
// each answered by one JSON line (a commandResult) on stdout:
//
//	kill <service>    SIGKILL, as a crash; answered once it has exited
//	start <service>   start a killed service again on the same ports with
//	                  the same environment; answered once it is SERVING
//
// A service that exits without a kill command ends the run with an error,
// as in `make run`.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// harness is -json mode's stdin and stdout.
type harness struct {
	in  io.Reader
	out io.Writer
}

// stackDescription is the JSON line: everything a client needs to reach
// the stack as a worker, an operator or an admin, and the database.
type stackDescription struct {
	// Services by name (profile, reviewmeta, oplog).
	Services map[string]serviceDescription `json:"services"`
	// TLS: the CA that verifies the servers, and the worker's client
	// certificate (spiffe://platforma/worker/dev-worker) and key, PEM
	// files.
	CA         string `json:"ca"`
	WorkerCert string `json:"worker_cert"`
	WorkerKey  string `json:"worker_key"`
	// Bearer tokens (the tokens themselves, not their files).
	OperatorToken string `json:"operator_token"`
	AdminToken    string `json:"admin_token"`
	WorkerToken   string `json:"worker_token"`
	// DatabaseURL is the superuser's URL (with its password) of the
	// database every service uses, for checks in SQL.
	DatabaseURL string `json:"database_url"`
}

type serviceDescription struct {
	Addr        string `json:"addr"`         // host:port of gRPC (TLS)
	MetricsAddr string `json:"metrics_addr"` // host:port of /metrics
	GRPCService string `json:"grpc_service"` // the name health checks take
	Pid         int    `json:"pid"`
}

// commandResult answers one command.
type commandResult struct {
	Command string `json:"command"`
	Service string `json:"service,omitempty"`
	OK      bool   `json:"ok"`
	Pid     int    `json:"pid,omitempty"`
	Error   string `json:"error,omitempty"`
}

func describe(services []service, creds *stackCredentials, databaseURL string, procs []*process) stackDescription {
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	token := func(file string) string {
		b, _ := os.ReadFile(file) // written by prepareCredentials just before
		return strings.TrimSpace(string(b))
	}
	d := stackDescription{
		Services: map[string]serviceDescription{},
		CA:       abs(creds.pki.CA), WorkerCert: abs(creds.pki.WorkerCert), WorkerKey: abs(creds.pki.WorkerKey),
		OperatorToken: token(creds.pki.OperatorToken), AdminToken: token(creds.pki.AdminToken), WorkerToken: token(creds.pki.WorkerToken),
		DatabaseURL: databaseURL,
	}
	for i, s := range services {
		d.Services[s.name] = serviceDescription{Addr: s.addr, MetricsAddr: s.metricsAddr, GRPCService: s.grpcService, Pid: procs[i].cmd.Process.Pid}
	}
	return d
}

// serve writes the description, then runs the commands read from h.in
// until it ends (nil: stop the stack), ctx ends (a signal), or a service
// exits unasked.
func (h *harness) serve(ctx context.Context, con *console, d stackDescription, procs []*process,
	restart func(i int) (*process, error), exited <-chan *process) error {
	enc := json.NewEncoder(h.out) // one line per value
	if err := enc.Encode(d); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(h.in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	killed := map[*process]bool{}
	for {
		select {
		case <-ctx.Done():
			con.logf("stopping services")
			return nil
		case p := <-exited:
			if killed[p] {
				continue
			}
			return fmt.Errorf("%s exited unexpectedly (%v); see its log lines above", p.s.name, p.exitErr)
		case line, ok := <-lines:
			if !ok {
				con.logf("stdin closed: stopping services")
				return nil
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			if err := enc.Encode(h.command(con, line, procs, restart, killed)); err != nil {
				return err
			}
		}
	}
}

// command runs one command line.
func (h *harness) command(con *console, line string, procs []*process, restart func(i int) (*process, error), killed map[*process]bool) commandResult {
	f := strings.Fields(line)
	res := commandResult{Command: f[0]}
	if len(f) != 2 {
		res.Error = "usage: kill <service> | start <service>"
		return res
	}
	res.Service = f[1]
	i := -1
	for j, p := range procs {
		if p.s.name == f[1] {
			i = j
		}
	}
	if i < 0 {
		res.Error = "no service " + strconv.Quote(f[1])
		return res
	}
	p := procs[i]
	switch f[0] {
	case "kill":
		if p.exited() {
			res.Error = f[1] + " is not running"
			return res
		}
		killed[p] = true
		con.logf("%s: kill -9 (pid %d), as asked on stdin", f[1], p.cmd.Process.Pid)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		res.OK, res.Pid = true, p.cmd.Process.Pid
	case "start":
		if !p.exited() {
			res.Error = f[1] + " is running"
			return res
		}
		np, err := restart(i)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		con.logf("%s: started again (pid %d)", f[1], np.cmd.Process.Pid)
		res.OK, res.Pid = true, np.cmd.Process.Pid
	default:
		res.Error = "unknown command " + strconv.Quote(f[0]) + " (kill <service> | start <service>)"
	}
	return res
}

// freePortsUnlessSet wraps getenv so that every port variable it leaves
// unset is a free port, chosen below the ephemeral range (where the
// kernel picks clients' ports, which could take it before a service binds
// it).
func freePortsUnlessSet(getenv func(string) string) func(string) string {
	chosen := map[string]string{}
	taken := map[int]bool{}
	vars := []string{"PG_PORT"}
	for _, name := range serviceNames {
		vars = append(vars, portVar(name, "grpc"), portVar(name, "metrics"))
	}
	for _, v := range vars {
		if getenv(v) == "" {
			p := pickFreePort(taken)
			taken[p] = true
			chosen[v] = strconv.Itoa(p)
		}
	}
	return func(name string) string {
		if v, ok := chosen[name]; ok {
			return v
		}
		return getenv(name)
	}
}

// pickFreePort returns a port nothing listens on now, between 10000 and the
// ephemeral range, not in taken.
func pickFreePort(taken map[int]bool) int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 10000
	for i := 0; i < 200 && low > from; i++ {
		port := from + rand.IntN(low-from)
		if taken[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port
	}
	// No room below the ephemeral range: let the kernel choose.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0 // portsFromEnv refuses 0, naming the variable
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
