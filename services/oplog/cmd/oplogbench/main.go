// Command oplogbench measures OpLogService on this machine and prints the
// figures. Load generator, server and Postgres share the machine; without
// DATABASE_URL it runs a throwaway cluster with Postgres's default
// durability (fsync and synchronous_commit on).
//
//	oplogbench ingest   (make bench-oplog) raw pgx COPY into the real schema,
//	                    before and after; N SDK clients through a real
//	                    `oplog serve` process (events/s, acknowledgement
//	                    p50/p99, server peak RSS), also for a baseline binary
//	                    when given; the same with the login outbox on, then
//	                    the relay draining it into ProfileService; 1,000
//	                    concurrent Ingest streams (peak RSS)
//	oplogbench steady   (make bench-sdk) SDK clients at a steady rate below
//	                    saturation: rows per stream, streams/s, delivery
//	                    latency
//	oplogbench indexes  raw COPY rate with each secondary index alone
//	oplogbench queries  (make bench-queries) 10M rows over 3 months: the query
//	                    RPCs against raw SQL for the same answers
//	oplogbench lifecycle (make bench-lifecycle) a month of 10M rows archived,
//	                    exported, verified and dropped: rates, RSS, sizes,
//	                    ingest during it against without
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

func main() {
	mode := "ingest"
	args := os.Args[1:]
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		mode, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("oplogbench "+mode, flag.ExitOnError)
	serverBin := fs.String("server", "bin/oplog", "the oplog binary to benchmark")
	baseline := fs.String("baseline", "", "ingest: also run the end-to-end load against this oplog binary (an older build), migrated by itself")
	profileBin := fs.String("profile", "bin/profile", "ingest: the profile binary, for the run with the login outbox and relay (\"\" skips it)")
	clients := fs.Int("clients", 8, "ingest, steady, replicas: SDK clients (one connection each)")
	duration := fs.Duration("duration", 20*time.Second, "how long each throughput run lasts")
	streams := fs.Int("streams", 1000, "ingest: concurrent Ingest streams for the memory run")
	rate := fs.Int("rate", 6000, "steady: entries/s of all clients together")
	rows := fs.Int("rows", 10_000_000, "queries: rows to load over three months; lifecycle: rows of the month")
	rounds := fs.Int("rounds", 3, "indexes: rounds per variant (the median is reported)")
	exportFrom := fs.String("export-from", "primary", "lifecycle: where the export reads the month: primary, or replica (a streaming standby the benchmark starts)")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's CPU profile here")
	_ = fs.Parse(args)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench:", err)
			os.Exit(1)
		}
	}
	var err error
	switch mode {
	case "ingest":
		err = runIngest(*serverBin, *baseline, *profileBin, *clients, *duration, *streams)
	case "steady":
		err = runSteady(*serverBin, *clients, *rate, *duration)
	case "indexes":
		err = runIndexes(*duration, *rounds)
	case "queries":
		err = runQueries(*serverBin, *rows)
	case "lifecycle":
		err = runLifecycle(*serverBin, *rows, *clients, *duration, *exportFrom)
	case "replicas":
		err = runReplicas(*serverBin, *clients, *duration)
	default:
		err = fmt.Errorf("unknown mode %q: ingest, steady, indexes, queries, lifecycle or replicas", mode)
	}
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "oplogbench:", err)
		os.Exit(1)
	}
}

func cpus() int { return runtime.NumCPU() }
