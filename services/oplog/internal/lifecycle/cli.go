package lifecycle

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/logging"
)

// Command is `oplog lifecycle`, the administrator's tool:
//
//	oplog lifecycle plan                     what a run would do now, and why
//	oplog lifecycle run [-dry-run]           do it (one run, holding the lock)
//	oplog lifecycle export -month 2025-03    export a month (hot or archived) and verify it
//	oplog lifecycle verify -month 2025-03    verify a month's recorded export
//	oplog lifecycle restore -month 2025-03 [-export-id ID]   bring a month back into the archive
//
// It connects as the schema's owner (LIFECYCLE_DATABASE_URL) and takes
// the policy flags `serve` takes, with the backfill window they are
// checked against.
func Command() app.Command {
	return app.Command{
		Synopsis: "plan|run|export|verify|restore [flags]",
		Run:      runCommand,
	}
}

func runCommand(ctx context.Context, env app.Env, args []string) error {
	const synopsis = "oplog lifecycle plan|run|export|verify|restore [flags]"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", app.ErrUsage, synopsis)
	}
	verb, args := args[0], args[1:]
	var cfg Config
	var backfill time.Duration
	var month, exportID, logLevel string
	var dryRun bool
	fs := flag.NewFlagSet("oplog lifecycle "+verb, flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	fs.DurationVar(&backfill, "backfill-window", 35*24*time.Hour, "oldest create_time Ingest accepts (as `serve` is configured)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	switch verb {
	case "run":
		fs.BoolVar(&dryRun, "dry-run", false, "record and print the plan, change nothing")
	case "export", "verify", "restore":
		fs.StringVar(&month, "month", "", "the month, YYYY-MM (UTC)")
		if verb == "restore" {
			fs.StringVar(&exportID, "export-id", "", "the export to restore (default: the month's recorded one)")
		}
	case "plan":
	default:
		return fmt.Errorf("%w: unknown lifecycle command %q; %s", app.ErrUsage, verb, synopsis)
	}
	if err := app.ParseFlags(fs, env, args, "oplog lifecycle "+verb+" [flags]"); err != nil {
		return err
	}
	var problems []error
	if err := cfg.Validate(backfill); err != nil {
		problems = append(problems, err)
	}
	if cfg.DatabaseURL == "" {
		problems = append(problems, errors.New("LIFECYCLE_DATABASE_URL (-lifecycle-database-url) is required: the schema owner's DSN"))
	}
	var m time.Time
	if verb == "export" || verb == "verify" || verb == "restore" {
		var err error
		if m, err = time.Parse("2006-01", month); err != nil {
			problems = append(problems, fmt.Errorf("-month must be YYYY-MM, got %q", month))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: invalid configuration:\n%v", app.ErrUsage, errors.Join(problems...))
	}
	level, err := logging.ParseLevel(logLevel)
	if err != nil {
		return fmt.Errorf("%w: %v", app.ErrUsage, err)
	}
	log, err := logging.New(env.Stderr, level, "text")
	if err != nil {
		return err
	}
	// A run is batch work: on a host it shares with a service, the
	// service's requests come first (nice 10; Postgres's own work for the
	// run keeps its priority).
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, 10); err != nil {
		log.Debug("lifecycle: could not lower the CPU priority", "error", err)
	}
	e, closeEngine, err := Open(ctx, cfg, time.Now, log)
	if err != nil {
		return err
	}
	defer closeEngine()
	e.Progress = progressPrinter(env.Stderr)
	out := env.Stderr

	switch verb {
	case "plan":
		steps, err := e.Plan(ctx)
		printSteps(out, steps)
		return err
	case "run":
		steps, err := e.Run(ctx, dryRun)
		printSteps(out, steps)
		return err
	case "export":
		man, err := e.ExportMonth(ctx, m)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: export %s verified: %d rows, %d files, digest %s\n", month, man.ExportID, man.Rows, len(man.Files), man.Digest)
	case "verify":
		man, err := e.VerifyMonth(ctx, m)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: export %s verified: %d rows, %d files, digest %s\n", month, man.ExportID, man.Rows, len(man.Files), man.Digest)
	case "restore":
		man, added, err := e.RestoreMonth(ctx, m, exportID)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: restored from export %s: %d rows, %d of them new; digest verified\n", month, man.ExportID, man.Rows, added)
	}
	return nil
}

func printSteps(w io.Writer, steps []Step) {
	if len(steps) == 0 {
		fmt.Fprintln(w, "nothing to do")
	}
	for _, s := range steps {
		line := fmt.Sprintf("%-8s %-20s %s", monthLabel(s.Month), s.Action, s.Reason)
		if s.Result != "" {
			line += " → " + s.Result
		}
		fmt.Fprintln(w, strings.TrimSpace(line))
	}
}

// progressPrinter prints a long step's progress at most every two
// seconds: rows, bytes, rate and time left.
func progressPrinter(w io.Writer) func(Progress) {
	var last time.Time
	return func(p Progress) {
		if !p.Done && time.Since(last) < 2*time.Second {
			return
		}
		last = time.Now()
		line := fmt.Sprintf("%s %s: %d rows", monthLabel(p.Month), p.Step, p.Rows)
		if p.Of > 0 {
			line += fmt.Sprintf(" of %d", p.Of)
		}
		if p.Bytes > 0 {
			line += fmt.Sprintf(", %.1f MiB", float64(p.Bytes)/(1<<20))
		}
		line += fmt.Sprintf(", %.0f rows/s", p.RowsPerSec)
		if eta := p.ETA(); eta > 0 && !p.Done {
			line += ", about " + eta.Round(time.Second).String() + " left"
		}
		if p.Done {
			line += ", done in " + p.Elapsed.Round(time.Millisecond).String()
		}
		fmt.Fprintln(w, line)
	}
}
