//go:build faults

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// Proc is one service binary run as `<bin> serve`, restartable on the same
// addresses (clients keep their targets across kills).
type Proc struct {
	Name    string
	Addr    string // gRPC, 127.0.0.1:port
	metrics string
	bin     string
	env     []string
	// creds dial the process (its TLS, as the suite's worker).
	creds   grpc.DialOption
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	starts  int
	// bindRetries counts restarts that found the port busy.
	bindRetries int

	// peak is the highest resident set size (VmHWM, bytes) of any of its
	// incarnations so far.
	peak atomic.Int64
}

// newProc prepares a service on free ports; env is added to its
// environment (after the defaults, so it wins).
func newProc(t *testing.T, dir, name, bin string, env ...string) *Proc {
	t.Helper()
	addr, metrics := freeAddr(t), freeAddr(t)
	p := &Proc{
		Name: name, Addr: addr, metrics: metrics, bin: bin, creds: workerCreds(t), logPath: filepath.Join(dir, name+".log"),
		env: append([]string{"LISTEN_ADDR=" + addr, "METRICS_ADDR=" + metrics,
			"LOG_LEVEL=warn", "LOG_FORMAT=text"}, env...),
	}
	t.Cleanup(func() {
		p.Kill9()
		if t.Failed() {
			t.Logf("last lines of %s's log (%s):\n%s", name, p.logPath, tailFile(p.logPath, 25))
		}
	})
	return p
}

// Start starts the process and waits until its gRPC health is SERVING
// (when servingTimeout > 0) or only until it listens (servingTimeout 0,
// for a start while the database is down).
func (p *Proc) Start(t *testing.T, servingTimeout time.Duration) {
	t.Helper()
	p.mu.Lock()
	if p.cmd != nil && !p.exitedLocked() {
		p.mu.Unlock()
		t.Fatalf("%s: already running", p.Name)
	}
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		t.Fatal(err)
	}
	p.starts++
	fmt.Fprintf(log, "---- start #%d at %s ----\n", p.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, "serve")
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = log, log
	// The process dies with the test binary; own process group, so a
	// Ctrl-C of `make` reaches it only through us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		p.mu.Unlock()
		t.Fatalf("start %s (%s; run `make build` first): %v", p.Name, p.bin, err)
	}
	log.Close() // the child has its own descriptor
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	go p.sampleRSS(cmd.Process.Pid, done)
	p.mu.Unlock()

	if err := p.waitReady(servingTimeout); err != nil {
		tail := tailFile(p.logPath, 25)
		if strings.Contains(tail, "address already in use") && p.bindRetries < 10 {
			// Not expected with ports below the ephemeral range (see
			// freeAddr); say who holds the port, then try again.
			p.bindRetries++
			port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
			out, _ := exec.Command("ss", "-tanpo", "( sport = :"+port(p.Addr)+" or sport = :"+port(p.metrics)+" )").CombinedOutput()
			t.Logf("%s: %s or %s busy at restart (retry %d in 0.5s); ss says:\n%s", p.Name, p.Addr, p.metrics, p.bindRetries, out)
			time.Sleep(500 * time.Millisecond)
			p.Start(t, servingTimeout)
			return
		}
		t.Fatalf("%s did not become ready: %v\nits log:\n%s", p.Name, err, tail)
	}
}

func (p *Proc) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Running reports whether the current incarnation is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exitedLocked()
}

// Pid is the current incarnation's process id.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *Proc) waitReady(servingTimeout time.Duration) error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	deadline := time.Now().Add(max(servingTimeout, 30*time.Second))
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-done:
			return errors.New("exited during start-up")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after 30s", p.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if servingTimeout == 0 {
		return nil
	}
	conn, err := grpc.NewClient(p.Addr, p.creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthgrpc.NewHealthClient(conn)
	deadline = time.Now().Add(servingTimeout)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := health.Check(ctx, &healthgrpc.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING {
			return nil
		}
		last = fmt.Sprint(resp.GetStatus(), err)
		select {
		case <-done:
			return errors.New("exited during start-up")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("health not SERVING after %s (last: %s)", servingTimeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill9 sends SIGKILL and waits until the process is gone. No-op when it
// is not running.
func (p *Proc) Kill9() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Term sends SIGTERM and waits up to timeout for the exit. It returns the
// exit code (-1 when killed by a signal) and how long the exit took.
func (p *Proc) Term(timeout time.Duration) (code int, took time.Duration, err error) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return 0, 0, errors.New("not started")
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, 0, err
	}
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return -1, time.Since(start), fmt.Errorf("did not exit within %s of SIGTERM; killed", timeout)
	}
	return cmd.ProcessState.ExitCode(), time.Since(start), nil
}

// PeakRSS is the highest resident set size seen over all incarnations.
func (p *Proc) PeakRSS() int64 { return p.peak.Load() }

// sampleRSS follows VmHWM (the kernel's own high-water mark of VmRSS) of
// pid every 50 ms until it exits.
func (p *Proc) sampleRSS(pid int, done <-chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if hwm := procStatusKB(pid, "VmHWM:") << 10; hwm > 0 {
			for {
				old := p.peak.Load()
				if hwm <= old || p.peak.CompareAndSwap(old, hwm) {
					break
				}
			}
		}
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

// procStatusKB reads one "Name: <n> kB" line of /proc/<pid>/status.
func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb
		}
	}
	return 0
}

// freeAddr returns 127.0.0.1:<port> with a port that is free now, below
// the kernel's ephemeral range, and not handed out before in this run.
//
// Services restart on the same port after kill -9. A port from the
// ephemeral range (what binding port 0 gives) can meanwhile become the
// source port of some outgoing connection — a client's reconnect to the
// dead port can even connect to itself — and the socket it leaves behind
// (TIME_WAIT for 60 s, without SO_REUSEADDR) makes the restart fail with
// "address already in use". The kernel never picks a port below the range
// on its own.
func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

var ports struct {
	sync.Mutex
	given map[int]bool
}

func freePort(t *testing.T) int {
	t.Helper()
	lo, hi := 20000, 32767
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start-1 < hi {
				hi = start - 1
			}
		}
	}
	if hi-lo < 1000 {
		lo = max(hi-5000, 1024)
	}
	ports.Lock()
	defer ports.Unlock()
	if ports.given == nil {
		ports.given = map[int]bool{}
	}
	for attempt := 0; attempt < 1000; attempt++ {
		port := lo + rand.IntN(hi-lo+1)
		if ports.given[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		_ = l.Close()
		ports.given[port] = true
		return port
	}
	t.Fatalf("no free port between %d and %d", lo, hi)
	return 0
}

// tailFile returns the last n lines of a file, for failure messages.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 64<<10 {
		_, _ = f.Seek(-64<<10, io.SeekEnd)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
