package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Run is one execution of the image's binary by the checker.
type Run struct {
	Args     []string
	UID, GID int // the ids the process ran as
	ExitCode int
	Output   string // stdout and stderr
}

// The services' command line (services/kit/app): `<svc> help` prints the
// usage naming serve, migrate and bootstrap and exits 0, and `<svc> serve
// -h` prints every flag with its default and exits 0. Neither touches a
// database, so they run anywhere. A change of that format fails the check
// loudly rather than passing it.
var (
	helpWords   = []string{"serve", "migrate", "bootstrap"}
	addrFlagRes = map[string]*regexp.Regexp{
		"listen-addr":  regexp.MustCompile(`(?m)^\s*-listen-addr, [A-Z_]+ \(default (\S+)\)`),
		"metrics-addr": regexp.MustCompile(`(?m)^\s*-metrics-addr, [A-Z_]+ \(default (\S+)\)`),
	}
)

// probeBinary runs bin (a copy of the image's /svc) as the image's user,
// with an empty environment like the image's, and returns the runs and
// the ports the binary listens on by default ("50053/tcp", sorted).
//
// As root, the process gets uid and gid by SysProcAttr.Credential and no
// supplementary groups, so the run is as unprivileged as in a container.
// As anyone else it is already not root; it runs as the caller.
func probeBinary(bin, svc string, uid, gid int, timeout time.Duration) ([]Run, []string, error) {
	// MkdirTemp made the directory 0700 for its owner; the image's user
	// must be able to reach the binary.
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		return nil, nil, err
	}
	var runs []Run
	help, err := runAs(bin, []string{"help"}, uid, gid, timeout)
	runs = append(runs, help)
	if err != nil {
		return runs, nil, err
	}
	if help.ExitCode != 0 {
		return runs, nil, fmt.Errorf("`%s help` exited %d: %s", svc, help.ExitCode, help.Output)
	}
	for _, w := range append([]string{svc}, helpWords...) {
		if !strings.Contains(help.Output, w) {
			return runs, nil, fmt.Errorf("`%s help` does not mention %q: %s", svc, w, help.Output)
		}
	}

	serveHelp, err := runAs(bin, []string{"serve", "-h"}, uid, gid, timeout)
	runs = append(runs, serveHelp)
	if err != nil {
		return runs, nil, err
	}
	if serveHelp.ExitCode != 0 {
		return runs, nil, fmt.Errorf("`%s serve -h` exited %d: %s", svc, serveHelp.ExitCode, serveHelp.Output)
	}
	var ports []string
	for _, flagName := range []string{"listen-addr", "metrics-addr"} {
		m := addrFlagRes[flagName].FindStringSubmatch(serveHelp.Output)
		if m == nil {
			return runs, nil, fmt.Errorf("`%s serve -h` shows no default for -%s", svc, flagName)
		}
		_, port, err := net.SplitHostPort(m[1])
		if err != nil {
			return runs, nil, fmt.Errorf("`%s serve -h`: -%s default %q: %v", svc, flagName, m[1], err)
		}
		ports = append(ports, port+"/tcp")
	}
	sort.Strings(ports)
	return runs, ports, nil
}

func runAs(bin string, args []string, uid, gid int, timeout time.Duration) (Run, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{} // the image sets no variables
	cmd.Dir = "/"        // the image's working directory
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second

	run := Run{Args: append([]string{filepath.Base(bin)}, args...), UID: os.Geteuid(), GID: os.Getegid()}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{},
		}}
		run.UID, run.GID = uid, gid
	}
	err := cmd.Run()
	run.Output = out.String()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return run, fmt.Errorf("`%s` did not finish within %v", strings.Join(run.Args, " "), timeout)
	case errors.As(err, &exit) && exit.Exited():
		run.ExitCode = exit.ExitCode()
	default:
		// Not started (EACCES: a parent of the temporary directory that
		// the image's user cannot enter, or a noexec mount; set TMPDIR),
		// or killed by a signal.
		return run, fmt.Errorf("running `%s` as uid %d: %v", strings.Join(run.Args, " "), run.UID, err)
	}
	return run, nil
}
