// Command fakesvc stands in for a service binary in the tests: it answers
// `help` and `serve -h` in the format of services/kit/app, which is all
// the checker runs, and builds in a second with CGO_ENABLED=0. `help` also
// prints the ids it runs as, so the tests can see the checker drop root.
package main

import (
	"fmt"
	"os"
	"path/filepath"
)

const (
	listenAddr  = ":50099"
	metricsAddr = ":9499"
)

func main() {
	name := filepath.Base(os.Args[0])
	top := fmt.Sprintf("%s serve|migrate|bootstrap [flags]; %s <command> -h for the flags", name, name)
	args := os.Args[1:]
	switch {
	case len(args) == 1 && args[0] == "help":
		groups, _ := os.Getgroups()
		fmt.Fprintln(os.Stderr, "usage:", top)
		fmt.Fprintf(os.Stderr, "ids: uid=%d gid=%d groups=%v env=%d\n", os.Getuid(), os.Getgid(), groups, len(os.Environ()))
	case len(args) == 2 && args[0] == "serve" && args[1] == "-h":
		fmt.Fprintf(os.Stderr, "usage: %s serve [flags]\n\nflags (each also read from the environment variable shown):\n", name)
		fmt.Fprintf(os.Stderr, "  -database-url, DATABASE_URL\n      Postgres connection URL (required)\n")
		fmt.Fprintf(os.Stderr, "  -listen-addr, LISTEN_ADDR (default %s)\n      gRPC listen address, host:port\n", listenAddr)
		fmt.Fprintf(os.Stderr, "  -metrics-addr, METRICS_ADDR (default %s)\n      Prometheus /metrics listen address, host:port\n", metricsAddr)
	default:
		fmt.Fprintf(os.Stderr, "%s: usage: %s\n", name, top)
		os.Exit(2)
	}
}
