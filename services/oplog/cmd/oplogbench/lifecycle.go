package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgcluster"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// runLifecycle measures the life cycle on a month of rows: the export
// (rows/s, MB/s, the CLI's peak RSS), Parquet size against the month's
// heap and indexes, ingest while the month is archived and exported
// against ingest without (before and after, in the same run), and the
// drop; then a storage table for a year at 10,000 logs/s.
func runLifecycle(serverBin string, rows, clients int, d time.Duration, exportFrom string) error {
	if exportFrom != "primary" && exportFrom != "replica" {
		return fmt.Errorf("-export-from %q: want primary or replica", exportFrom)
	}
	ctx := context.Background()
	adminDSN, stopDB, err := database(ctx)
	if err != nil {
		return err
	}
	defer stopDB()
	dsn, err := freshDatabase(ctx, adminDSN, "bench_lifecycle", serverBin)
	if err != nil {
		return err
	}
	ownerDSN := dsn
	if _, ok := bootstrapped.Load(dsn); ok {
		ownerDSN = asRole(dsn, migrate.DefaultRoles(migrations.OpLog.Schema).Owner)
	}
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -4, 0)
	if err := createPartitions(ctx, dsn, month, month); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	start := time.Now()
	const chunk = 1_000_000
	for from := 1; from <= rows; from += chunk {
		if _, err := pool.Exec(ctx, loadRows, from, min(from+chunk-1, rows), rows, month, 28*86400); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	part := "oplog." + store.PartitionName(month)
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+part); err != nil {
		return err
	}
	var heap, total int64
	if err := pool.QueryRow(ctx, `SELECT pg_table_size($1::regclass), pg_total_relation_size($1::regclass)`, part).Scan(&heap, &total); err != nil {
		return err
	}
	fmt.Printf("oplogbench lifecycle: %d rows in %s (loaded in %s): heap %.0f MiB, with indexes %.0f MiB (%.0f bytes/row), on %d CPUs\n\n",
		rows, month.Format("2006-01"), time.Since(start).Round(time.Second), mib(heap), mib(total), float64(total)/float64(rows), cpus())

	coldDir, err := os.MkdirTemp("", "oplogbench-cold-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(coldDir)
	lifecycleEnv := []string{"LIFECYCLE_DATABASE_URL=" + ownerDSN, "LIFECYCLE_STORE=" + coldDir, "LOG_LEVEL=warn"}
	if exportFrom == "replica" {
		// A streaming standby on the same machine: the export's reads go
		// through its buffer cache, not the primary's; its replay of the
		// ingest load runs in every window alike.
		if benchCluster == nil {
			return errors.New("-export-from replica needs the benchmark's own cluster (unset DATABASE_URL)")
		}
		dir, err := os.MkdirTemp("", "oplogbench-standby-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		_ = os.Chmod(dir, 0o755) // the postgres OS user's, when we are root
		standby, err := benchCluster.NewStandby(ctx, pgcluster.Options{
			DataDir:  dir + "/data",
			Settings: map[string]string{"max_connections": "200", "shared_buffers": "256MB"},
		})
		if err == nil {
			err = standby.Start(ctx)
		}
		if err != nil {
			return fmt.Errorf("standby: %w", err)
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = standby.Stop(stopCtx)
		}()
		u, err := url.Parse(ownerDSN)
		if err != nil {
			return err
		}
		u.Host = fmt.Sprintf("127.0.0.1:%d", standby.Port())
		lifecycleEnv = append(lifecycleEnv, "LIFECYCLE_READ_DATABASE_URL="+u.String())
		fmt.Printf("the export reads from a streaming standby on port %d\n\n", standby.Port())
	}

	sec := benchCredentials().secured
	srv, err := startServer(serverBin, dsn, sec, "LOG_LEVEL=error")
	if err != nil {
		return err
	}
	defer srv.stop()

	// Every load window starts right after a CHECKPOINT, so none of them
	// pays for a checkpoint the others do not (the full-page images after
	// one inflate the WAL for minutes): the windows differ only in the
	// life cycle running or not.
	checkpoint := func() error {
		_, err := pool.Exec(ctx, "CHECKPOINT")
		return err
	}
	// The buffer counters of every window: what the export costs ingest
	// shows there (buffers evicted, and written out by ingest's own
	// backends), apart from CPU taken by other work on the machine.
	var counters []bufferCounters
	counted := func(load func() (loadResult, error)) (loadResult, error) {
		c0, err := readBufferCounters(ctx, pool)
		if err != nil {
			return loadResult{}, err
		}
		res, err := load()
		if err != nil {
			return res, err
		}
		c1, err := readBufferCounters(ctx, pool)
		counters = append(counters, bufferCounters{alloc: c1.alloc - c0.alloc, backend: c1.backend - c0.backend})
		return res, err
	}
	load := func() (loadResult, error) { return sdkLoad(srv.addr, sec.worker, clients, d, false) }
	if err := checkpoint(); err != nil {
		return err
	}
	before, err := counted(load)
	if err != nil {
		return err
	}
	// Archive, export and verify the month while the same load runs.
	if err := checkpoint(); err != nil {
		return err
	}
	cli := exec.Command(serverBin, "lifecycle", "run")
	cli.Env = append(os.Environ(), append(lifecycleEnv, "LIFECYCLE_RETENTION=87600h", "LIFECYCLE_ROLLUP_RETENTION=0")...)
	cliOut := &tail{}
	cli.Stderr = cliOut
	cliStart := time.Now()
	if err := cli.Start(); err != nil {
		return err
	}
	cliDone := make(chan error, 1)
	var cliEnd time.Time
	go func() {
		err := cli.Wait()
		cliEnd = time.Now()
		cliDone <- err
	}()
	during, err := counted(load)
	if err != nil {
		return err
	}
	loadEnd := time.Now()
	if err := <-cliDone; err != nil {
		return fmt.Errorf("lifecycle run: %w\n%s", err, cliOut)
	}
	cliTime := cliEnd.Sub(cliStart)
	cliRSS := cli.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	if err := checkpoint(); err != nil {
		return err
	}
	after, err := counted(load)
	if err != nil {
		return err
	}

	steps := func(step string) (time.Duration, error) {
		var secs float64
		err := pool.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM max(finish_time - start_time)), 0)::float8
			FROM oplog.lifecycle_steps WHERE step = $1 AND ok AND NOT dry_run`, step).Scan(&secs)
		return time.Duration(secs * float64(time.Second)), err
	}
	archiveTime, err := steps("archive")
	if err != nil {
		return err
	}
	exportTime, err := steps("export")
	if err != nil {
		return err
	}
	var exportBytes, exportRows int64
	if err := pool.QueryRow(ctx, `SELECT export_bytes, export_rows FROM oplog.lifecycle_months WHERE month = $1`, month).Scan(&exportBytes, &exportRows); err != nil {
		return err
	}

	// Past a short retention: the month is verified once more and dropped.
	drop := exec.Command(serverBin, "lifecycle", "run")
	drop.Env = append(os.Environ(), append(lifecycleEnv, "BACKFILL_WINDOW=1h", "LIFECYCLE_HOT_WINDOW=24h",
		"LIFECYCLE_RETENTION=48h", "LIFECYCLE_ROLLUP_RETENTION=0")...)
	if out, err := drop.CombinedOutput(); err != nil {
		return fmt.Errorf("lifecycle run (drop): %w\n%s", err, out)
	}
	dropTime, err := steps("drop")
	if err != nil {
		return err
	}

	// The share of the load window the run covered: the figure compares
	// the whole window, so a run shorter than it dilutes its cost.
	overlap := min(1, cliTime.Seconds()/loadEnd.Sub(cliStart).Seconds())
	baseline := (before.rate + after.rate) / 2
	fmt.Printf("%-44s %s\n", "archive (detach concurrently + attach)", archiveTime.Round(time.Millisecond))
	fmt.Printf("%-44s %s: %.0f rows/s, %.1f MB/s of Parquet, %d rows\n", "export + read-back verification", exportTime.Round(time.Millisecond),
		float64(exportRows)/exportTime.Seconds(), float64(exportBytes)/1e6/exportTime.Seconds(), exportRows)
	fmt.Printf("%-44s %.0f MiB\n", "peak RSS of `oplog lifecycle run`", mib(cliRSS))
	fmt.Printf("%-44s %.0f MiB = %.1f%% of heap + indexes (%.1f bytes/row)\n", "Parquet (zstd)", mib(exportBytes),
		100*float64(exportBytes)/float64(total), float64(exportBytes)/float64(rows))
	fmt.Printf("%-44s %.0f rows/s during the run (it covered %.0f%% of the load), %.0f without (before %.0f, after %.0f): %.0f%%\n",
		"ingest, SDK clients through `oplog serve`", during.rate, 100*overlap, baseline, before.rate, after.rate, 100*during.rate/baseline)
	fmt.Printf("%-44s before %d / %d, during %d / %d, after %d / %d\n", "shared buffers allocated / written by backends",
		counters[0].alloc, counters[0].backend, counters[1].alloc, counters[1].backend, counters[2].alloc, counters[2].backend)
	fmt.Printf("%-44s %s (verifying the export again first, and the DROP)\n\n", "drop step", dropTime.Round(time.Millisecond))

	// A year at 10,000 logs/s, from the bytes per row measured above.
	const perSec = 10_000
	day := float64(perSec * 86400)
	hotPerRow, coldPerRow := float64(total)/float64(rows), float64(exportBytes)/float64(rows)
	gb := func(days, perRow float64) float64 { return days * day * perRow / 1e9 }
	fmt.Printf("a year at %d logs/s (%.0f M rows/day), from the measured %.0f bytes/row hot and %.0f bytes/row cold:\n", perSec, day/1e6, hotPerRow, coldPerRow)
	fmt.Printf("  %-52s %8.0f GB hot\n", "this life cycle: 90 days hot", gb(90, hotPerRow))
	fmt.Printf("  %-52s %8.0f GB cold\n", "                 275 days in cold storage", gb(275, coldPerRow))
	fmt.Printf("  %-52s %8.0f GB hot\n", "a nightly DELETE after 2 years: the whole year hot", gb(365, hotPerRow))
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// tail keeps the last 4 KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }

// bufferCounters are pg_stat_bgwriter's buffers allocated (each one
// evicts a page once the cache is full) and buffers written out by
// backends themselves rather than by the background writer or a
// checkpoint.
type bufferCounters struct{ alloc, backend int64 }

func readBufferCounters(ctx context.Context, pool *pgxpool.Pool) (bufferCounters, error) {
	var c bufferCounters
	err := pool.QueryRow(ctx, `SELECT buffers_alloc, buffers_backend FROM pg_stat_bgwriter`).Scan(&c.alloc, &c.backend)
	return c, err
}
