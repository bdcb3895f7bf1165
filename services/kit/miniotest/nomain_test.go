package miniotest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWithoutMain runs a test binary that starts a server and exits
// without Main's clean-up: the server must die with it, and the next
// server start removes its directory.
func TestWithoutMain(t *testing.T) {
	if os.Getenv("MINIOTEST_HELPER") == "1" {
		srv := Start(t)
		fmt.Printf("helper pid=%d dir=%s\n", srv.Pid(), srv.dir)
		os.Exit(0) // no clean-up at all, as if killed
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWithoutMain$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MINIOTEST_HELPER=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	var pid int
	var dir string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "helper pid=%d dir=%s", &pid, &dir); err == nil {
			break
		}
	}
	require.NotZero(t, pid, "%s", out)

	require.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 20*time.Millisecond,
		"the server (pid %d) outlived its test binary", pid)
	_, err = os.Stat(dir)
	require.NoError(t, err, "the helper left its directory behind")
	removeStaleDirs()
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "stale directory %s was not removed: %v", dir, err)
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
