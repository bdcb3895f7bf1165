// Package app is the command line of every platforma binary:
//
//	<service> serve      run the gRPC server
//	<service> migrate    apply the service's database migrations
//	<service> bootstrap  an administrator's one-time set-up before migrate:
//	                     the service's roles, schema and privileges
//
// Configuration comes from flags, each with an environment variable
// equivalent (see EnvName), and is validated before anything starts.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/logging"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/kit/telemetry"
)

// Service describes one binary.
type Service struct {
	// Name is the binary's name, e.g. "profile".
	Name string
	// DefaultListenAddr and DefaultMetricsAddr are the default ports.
	DefaultListenAddr  string
	DefaultMetricsAddr string
	// DefaultMaxRecvMsgBytes overrides the default request size limit
	// (4 MiB) when set.
	DefaultMaxRecvMsgBytes int
	// Migrations are the service's schema migrations.
	Migrations migrations.Set
	// Config, if set, adds the service's own flags to `serve` and
	// validates them with the rest; Register reads the parsed values.
	Config Configurable
	// Register wires the service's gRPC implementation to its database:
	// the primary, and the read replica's router when -read-database-url
	// is set (the query RPCs' reads; see db.Reads).
	Register func(server.Registrar, db.Pools) error
	// Methods is the method table the server authorizes calls with; nil
	// means auth.Methods, the platform's one table. Only services outside
	// the platform (tests') set it.
	Methods auth.Table
	// PageTokens, if set, is given the key ring of the page tokens
	// (-page-token-keys, else a random key of the process) before Register
	// runs; the service hands it to its List RPCs.
	PageTokens func(*pagetoken.Keyring)
	// Codec, if set, replaces grpc's protobuf codec (server.Options.Codec).
	Codec encoding.CodecV2
	// GRPCOptions are extra gRPC server options the service needs; a
	// codec belongs in Codec.
	GRPCOptions []grpc.ServerOption
	// Commands are the binary's own commands besides serve, migrate and
	// bootstrap, by name.
	Commands map[string]Command
}

// Command is one of a binary's own commands.
type Command struct {
	// Synopsis is the command's usage line after the binary's name.
	Synopsis string
	// Run runs it with the arguments after its name. Flags parsed with
	// ParseFlags read their environment variables as every flag does.
	// An error wrapping ErrUsage exits 2.
	Run func(ctx context.Context, env Env, args []string) error
}

// ParseFlags parses a command's flags as serve's are: flag, then
// environment variable (EnvName), then default; -h prints the flags
// under synopsis. Its errors wrap ErrUsage.
func ParseFlags(fs *flag.FlagSet, env Env, args []string, synopsis string) error {
	fs.SetOutput(env.Stderr)
	fs.Usage = usage(env.Stderr, fs, synopsis)
	if err := parseFlags(fs, args, env.Getenv); err != nil {
		return usageError(err)
	}
	return nil
}

// ErrUsage marks a command's errors that are the caller's: the binary
// exits 2.
var ErrUsage = errUsage

// Configurable is a service's own configuration.
type Configurable interface {
	// RegisterFlags adds the flags; each also gets its environment
	// variable (EnvName).
	RegisterFlags(*flag.FlagSet)
	// Validate returns every problem at once, naming the variables.
	Validate() error
}

// Env is the process environment a command runs with; tests substitute it.
type Env struct {
	Args   []string // without the program name
	Getenv func(string) string
	Stderr io.Writer
	// Ready, if set, is called with the server once it listens.
	Ready func(*server.Server)
}

// Main runs the binary and returns its exit code: 0 on success and after a
// requested shutdown, 1 on failure, 2 on bad usage or configuration.
func Main(svc Service) int {
	return Run(context.Background(), svc, Env{Args: os.Args[1:], Getenv: os.Getenv, Stderr: os.Stderr})
}

// errUsage marks errors that are the caller's, answered with usage text.
var errUsage = errors.New("usage")

// Run is Main with an explicit context and environment. SIGINT and SIGTERM
// end ctx's serve gracefully.
func Run(ctx context.Context, svc Service, env Env) int {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore default handling: a second Ctrl-C
	// kills the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()

	err := dispatch(ctx, svc, env)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(env.Stderr, "%s: %v\n", svc.Name, err)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "%s: %v\n", svc.Name, err)
		return 1
	}
}

func dispatch(ctx context.Context, svc Service, env Env) error {
	top := fmt.Sprintf("%s serve|migrate|bootstrap [flags]; %s <command> -h for the flags", svc.Name, svc.Name)
	if len(env.Args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, top)
	}
	cmd, args := env.Args[0], env.Args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, svc, env, args)
	case "migrate":
		return migrateCmd(ctx, svc, env, args)
	case "bootstrap":
		return bootstrapCmd(ctx, svc, env, args)
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(env.Stderr, "usage:", top)
		for name, c := range svc.Commands {
			fmt.Fprintf(env.Stderr, "       %s %s %s\n", svc.Name, name, c.Synopsis)
		}
		return nil
	default:
		if c, ok := svc.Commands[cmd]; ok {
			return c.Run(ctx, env, args)
		}
		return fmt.Errorf("%w: unknown command %q; %s", errUsage, cmd, top)
	}
}

func newFlagSet(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

func serve(ctx context.Context, svc Service, env Env, args []string) error {
	var cfg serveConfig
	fs := newFlagSet(svc.Name+" serve", env)
	cfg.register(fs, svc)
	fs.Usage = usage(env.Stderr, fs, svc.Name+" serve [flags]")
	if err := parseFlags(fs, args, env.Getenv); err != nil {
		return usageError(err)
	}
	if err := cfg.validate(svc); err != nil {
		return fmt.Errorf("%w: invalid configuration:\n%v", errUsage, err)
	}
	logger, err := newLogger(env, cfg.commonConfig)
	if err != nil {
		return err
	}
	logger = logger.With("service", svc.Name)

	if svc.PageTokens != nil {
		keys, err := cfg.pageTokenKeys()
		if err != nil {
			return err
		}
		if keys == nil {
			keys = pagetoken.NewRandomKeyring()
			logger.Warn("PAGE_TOKEN_KEYS not set: page tokens are signed with a random key of this process, so they fail after a restart and on other replicas")
		} else {
			logger.Info("page token keys", "signing", keys.SigningKeyID(), "key_ids", keys.KeyIDs())
		}
		svc.PageTokens(keys)
	}

	shutdownTracing, err := telemetry.Setup(ctx, svc.Name, env.Getenv)
	if err != nil {
		return err
	}
	defer func() {
		// A fresh context: ctx is done by now. Spans still buffered get a
		// few seconds to reach the collector.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(flushCtx); err != nil {
			logger.Warn("flushing traces on shutdown", "error", err)
		}
	}()

	pool, err := db.NewPool(ctx, db.PoolConfig{
		URL:             cfg.DatabaseURL,
		ApplicationName: svc.Name,
		MaxConns:        int32(cfg.DBMaxConns),
		ConnectTimeout:  cfg.DBConnectTimeout,
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	pools := db.Pools{Primary: pool}
	if cfg.ReadDatabaseURL != "" {
		readPool, err := db.NewPool(ctx, db.PoolConfig{
			URL:             cfg.ReadDatabaseURL,
			ApplicationName: svc.Name + "-read",
			MaxConns:        int32(cfg.DBMaxConns),
			ConnectTimeout:  cfg.DBConnectTimeout,
		})
		if err != nil {
			return err
		}
		defer readPool.Close()
		pools.Reads = db.NewReads(pool, readPool, db.ReadsConfig{MaxLag: cfg.ReadMaxLag, Logger: logger})
		logger.Info("read replica: the query RPCs read from it while it is within the bound, else from the primary", "max_lag", cfg.ReadMaxLag.String())
	}

	// TLS and authentication: files loaded, JWKS read; what fails here
	// is configuration, reported like a bad flag.
	tlsCfg, authn, err := cfg.security.build(ctx, logger, svc.Methods)
	if err != nil {
		return fmt.Errorf("%w: invalid configuration:\n%v", errUsage, err)
	}
	logger.Info("security", cfg.security.summary()...)

	srv, err := server.New(server.Config{
		ListenAddr:      cfg.ListenAddr,
		MetricsAddr:     cfg.MetricsAddr,
		HealthAddr:      cfg.HealthAddr,
		PprofAddr:       cfg.security.PprofAddr,
		TLS:             tlsCfg,
		Insecure:        cfg.security.Insecure,
		ShutdownTimeout: cfg.ShutdownTimeout,
		HealthInterval:  cfg.HealthInterval,
		MaxRecvMsgSize:  cfg.MaxRecvMsgBytes,
		Limits:          cfg.limits(),
	}, server.Options{
		Logger:   logger,
		Database: pool,
		Register: func(r server.Registrar) error {
			if err := r.Metrics.Register(db.NewPoolCollector(pool)); err != nil {
				return fmt.Errorf("register pool metrics: %w", err)
			}
			if pools.Reads != nil {
				for _, c := range pools.Reads.Collectors() {
					if err := r.Metrics.Register(c); err != nil {
						return fmt.Errorf("register read replica metrics: %w", err)
					}
				}
				r.Background("read replica lag", pools.Reads.Run)
			}
			return svc.Register(r, pools)
		},
		Codec:       svc.Codec,
		GRPCOptions: svc.GRPCOptions,
		Auth:        authn,
	})
	if err != nil {
		return err
	}
	if env.Ready != nil {
		env.Ready(srv)
	}
	return srv.Run(ctx)
}

func migrateCmd(ctx context.Context, svc Service, env Env, args []string) error {
	var cfg commonConfig
	fs := newFlagSet(svc.Name+" migrate", env)
	cfg.register(fs)
	fs.Usage = usage(env.Stderr, fs, svc.Name+" migrate [flags]")
	if err := parseFlags(fs, args, env.Getenv); err != nil {
		return usageError(err)
	}
	if errs := cfg.validate(); len(errs) > 0 {
		return fmt.Errorf("%w: invalid configuration:\n%v", errUsage, errors.Join(errs...))
	}
	logger, err := newLogger(env, cfg)
	if err != nil {
		return err
	}
	applied, err := migrate.Up(ctx, cfg.DatabaseURL, svc.Migrations, logger)
	if err != nil {
		return err
	}
	logger.Info("migrations applied", "service", svc.Name, "schema", svc.Migrations.Schema, "versions", applied)
	return nil
}

func usageError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %v", errUsage, err)
}

func newLogger(env Env, cfg commonConfig) (*slog.Logger, error) {
	level, err := logging.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	return logging.New(env.Stderr, level, cfg.LogFormat)
}
