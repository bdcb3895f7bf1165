package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"

	"github.com/platforma/platforma/services/kit/balance"
)

// runReplicas measures ingest through 1, 2 and 3 OpLogService replicas on
// one database: clients SDK clients logging as fast as they are
// acknowledged, spread over the replicas by round_robin as the SDK's Dial
// does for a DNS name with an address per replica. Each run also reports
// the CPU (in cores) that the load generator, the servers and Postgres
// used, from /proc, to show which of them is the limit.
func runReplicas(serverBin string, clients int, d time.Duration) error {
	ctx := context.Background()
	adminDSN, stopDB, err := database(ctx)
	if err != nil {
		return err
	}
	defer stopDB()
	sec := benchCredentials().secured
	fmt.Printf("oplogbench replicas: %d SDK clients, %s runs, on %d CPUs (the load generator, the servers and Postgres share them)\n\n", clients, d, cpus())
	var base float64
	for n := 1; n <= 3; n++ {
		dsn, err := freshDatabase(ctx, adminDSN, fmt.Sprintf("bench_replicas_%d", n), serverBin)
		if err != nil {
			return err
		}
		var servers []*server
		var addrs []string
		for i := 0; i < n; i++ {
			srv, err := startServer(serverBin, dsn, sec)
			if err != nil {
				return err
			}
			defer srv.stop()
			servers = append(servers, srv)
			addrs = append(addrs, srv.addr)
		}
		dial := append(append([]grpc.DialOption{}, sec.worker...),
			grpc.WithResolvers(staticResolver{addrs: addrs}), balance.RoundRobin(),
			// The servers' certificate names localhost.
			grpc.WithAuthority("localhost"))
		var pids []int
		for _, s := range servers {
			pids = append(pids, s.cmd.Process.Pid)
		}
		before, start := cpuSnapshot(pids), time.Now()
		res, err := sdkLoad(staticScheme+":///oplog", dial, clients, d, false)
		if err != nil {
			return err
		}
		cpu := cpuSnapshot(pids).since(before, time.Since(start))
		for _, s := range servers {
			s.stop()
		}
		if n == 1 {
			base = res.rate
		}
		fmt.Printf("%d replica(s)  %9.0f events/s (%3.0f%% of 1 replica), ack p50 %.0f ms, p99 %.0f ms; %d acknowledged, %d dropped, %d failed\n",
			n, res.rate, 100*res.rate/base, res.p50, res.p99, res.acked, res.dropped, res.failed)
		fmt.Printf("              CPU in cores: load generator %.2f, servers %.2f (%s), Postgres %.2f; %.2f of %d in all\n",
			cpu.self, cpu.servers, cpu.perServer(), cpu.postgres, cpu.self+cpu.servers+cpu.postgres, cpus())
	}
	return nil
}

// staticScheme resolves to a fixed list of addresses: the replicas.
const staticScheme = "replicas"

type staticResolver struct{ addrs []string }

func (b staticResolver) Scheme() string { return staticScheme }

func (b staticResolver) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	var state resolver.State
	for _, a := range b.addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	return staticResolver{}, cc.UpdateState(state)
}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}

// cpuTimes are CPU seconds (user + system) so far: this process, each
// server, and every process named postgres (the benchmark's cluster).
type cpuTimes struct {
	self, postgres float64
	servers        []float64
}

func cpuSnapshot(servers []int) cpuTimes {
	t := cpuTimes{self: procCPU(os.Getpid())}
	for _, pid := range servers {
		t.servers = append(t.servers, procCPU(pid))
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, comm := range stats {
		b, err := os.ReadFile(comm)
		if err != nil || strings.TrimSpace(string(b)) != "postgres" {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(comm))); err == nil {
			t.postgres += procCPU(pid)
		}
	}
	return t
}

// cpuUse is CPU used over a window, in cores.
type cpuUse struct {
	self, servers, postgres float64
	each                    []float64
}

// since is the use between before and t over elapsed. Postgres backends
// that exited meanwhile are not counted (the servers' pools keep theirs).
func (t cpuTimes) since(before cpuTimes, elapsed time.Duration) cpuUse {
	s := elapsed.Seconds()
	u := cpuUse{self: (t.self - before.self) / s, postgres: max(0, t.postgres-before.postgres) / s}
	for i := range t.servers {
		c := (t.servers[i] - before.servers[i]) / s
		u.each = append(u.each, c)
		u.servers += c
	}
	return u
}

func (u cpuUse) perServer() string {
	var parts []string
	for _, c := range u.each {
		parts = append(parts, fmt.Sprintf("%.2f", c))
	}
	return "each " + strings.Join(parts, " + ")
}

// procCPU is a process's user + system CPU seconds (/proc/<pid>/stat
// fields 14 and 15, in clock ticks of 1/100 s).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}
