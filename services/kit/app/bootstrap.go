package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/platforma/platforma/services/kit/migrate"
)

// bootstrapConfig is the configuration of `<service> bootstrap`.
type bootstrapConfig struct {
	commonConfig
	OwnerRole           string
	RuntimeRole         string
	OwnerPasswordFile   string
	RuntimePasswordFile string
}

func (c *bootstrapConfig) register(fs *flag.FlagSet, svc Service) {
	c.commonConfig.register(fs)
	// The administrator connects; the flag's text says so (the default
	// text is about the service's own roles).
	fs.Lookup("database-url").Usage = "Postgres connection URL of an administrator (a superuser, or a role with CREATEROLE that owns the database) connected to the service's database (required)"
	roles := migrate.DefaultRoles(svc.Migrations.Schema)
	fs.StringVar(&c.OwnerRole, "owner-role", roles.Owner, "the role that owns the schema; `migrate` connects as it")
	fs.StringVar(&c.RuntimeRole, "runtime-role", roles.Runtime, "the role `serve` connects as: its DML grants only")
	fs.StringVar(&c.OwnerPasswordFile, "owner-password-file", "", "a file holding the owner role's password (ASCII; a trailing newline is ignored); unset leaves the password as it is")
	fs.StringVar(&c.RuntimePasswordFile, "runtime-password-file", "", "a file holding the runtime role's password, as -owner-password-file")
}

func (c *bootstrapConfig) validate() []error {
	errs := c.commonConfig.validate()
	if c.OwnerRole == "" || c.RuntimeRole == "" {
		errs = append(errs, errors.New("OWNER_ROLE (-owner-role) and RUNTIME_ROLE (-runtime-role) must not be empty"))
	} else if c.OwnerRole == c.RuntimeRole {
		errs = append(errs, fmt.Errorf("OWNER_ROLE (-owner-role) and RUNTIME_ROLE (-runtime-role) must differ, both are %q", c.OwnerRole))
	}
	return errs
}

// bootstrapCmd is what an administrator runs for a service before its
// first `migrate`, and may run again at any time (it changes nothing the
// second time): the service's two roles, its schema owned by the owner
// role, and the database's privileges narrowed to CONNECT (migrate.Bootstrap).
// Deployments run it as a job with the administrator's URL, so the
// services themselves never hold a role that can create roles or schemas.
func bootstrapCmd(ctx context.Context, svc Service, env Env, args []string) error {
	var cfg bootstrapConfig
	fs := newFlagSet(svc.Name+" bootstrap", env)
	cfg.register(fs, svc)
	fs.Usage = usage(env.Stderr, fs, svc.Name+" bootstrap [flags]")
	if err := parseFlags(fs, args, env.Getenv); err != nil {
		return usageError(err)
	}
	if errs := cfg.validate(); len(errs) > 0 {
		return fmt.Errorf("%w: invalid configuration:\n%v", errUsage, errors.Join(errs...))
	}
	logger, err := newLogger(env, cfg.commonConfig)
	if err != nil {
		return err
	}
	// Read the passwords before touching the database: a missing file
	// must not leave a half-done bootstrap behind.
	passwords := map[string]string{}
	for role, file := range map[string]string{cfg.OwnerRole: cfg.OwnerPasswordFile, cfg.RuntimeRole: cfg.RuntimePasswordFile} {
		if file == "" {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("the password of %s: %w", role, err)
		}
		passwords[role] = strings.TrimRight(string(b), "\r\n")
	}

	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	roles := migrate.Roles{Owner: cfg.OwnerRole, Runtime: cfg.RuntimeRole}
	if err := migrate.Bootstrap(ctx, conn, svc.Migrations, roles); err != nil {
		return err
	}
	for role, password := range passwords {
		if err := migrate.SetPassword(ctx, conn, role, password); err != nil {
			return err
		}
	}
	logger.Info("bootstrapped", "service", svc.Name, "schema", svc.Migrations.Schema,
		"owner_role", roles.Owner, "runtime_role", roles.Runtime, "passwords_set", len(passwords))
	return nil
}
