// Command hastack is `make run-ha`: the whole platforma stack on a local
// three-node Patroni cluster with synchronous replication
// (synchronous_mode_strict), the services connected through a multi-host
// URL with target_session_attrs=read-write, so that after a failover they
// reconnect to the new leader by themselves.
//
// It starts etcd and three Patroni nodes (services/kit/hacluster) in a
// throwaway directory, creates the database platforma, then runs devstack
// with DATABASE_URL set to the superuser's multi-host URL (devstack's
// bring-your-own-server mode: migrations, the three services, the banner).
// Ctrl-C stops devstack's services, then Patroni and etcd, and removes the
// directory. While it runs, try a failover:
//
//	kill -9 $(head -1 <dir>/pgN/data/postmaster.pid)    # the leader's postmaster
//	patronictl -c <dir>/pgN/patroni.yml list
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/platforma/platforma/services/kit/hacluster"
)

const database = "platforma"

func main() {
	binDir := flag.String("bin", "bin", "directory with the service binaries and devstack")
	grpcurl := flag.String("grpcurl", "grpcurl", "grpcurl binary, for devstack's printed examples")
	async := flag.Bool("async", false, "asynchronous replication instead of synchronous_mode_strict")
	keep := flag.Bool("keep", false, "keep the cluster's directory after Ctrl-C")
	flag.Parse()
	if err := run(*binDir, *grpcurl, *async, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "\nhastack: %v\n", err)
		os.Exit(1)
	}
}

func run(binDir, grpcurl string, async, keep bool) error {
	if err := hacluster.Check(); err != nil {
		return err
	}
	devstack, err := filepath.Abs(filepath.Join(binDir, "devstack"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(devstack); err != nil {
		return fmt.Errorf("%s not found: build it (make run-ha does)", devstack)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "platforma-ha-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	mode := "synchronous (synchronous_mode_strict)"
	if async {
		mode = "asynchronous"
	}
	fmt.Printf("hastack: starting etcd and 3 Patroni nodes, %s replication, in %s\n", mode, dir)
	started := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	c, err := hacluster.Start(startCtx, hacluster.Options{Dir: dir, Async: async})
	cancel()
	if err != nil {
		return fmt.Errorf("HA cluster: %w (logs in %s)", err, dir)
	}
	defer func() {
		fmt.Println("hastack: stopping Patroni and etcd")
		stopCtx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		_ = c.Stop(stopCtx)
	}()
	if err := c.Exec(ctx, "postgres", "CREATE DATABASE "+database); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("hastack: cluster up in %.0fs; leader %s\n", time.Since(started).Seconds(), leader.Name)
	for _, n := range c.Nodes {
		fmt.Printf("  %s: postgres 127.0.0.1:%d, REST http://127.0.0.1:%d, log %s\n", n.Name, n.PGPort, n.APIPort, n.LogFile())
	}
	fmt.Printf("  status:   patronictl -c %s list\n", c.Nodes[0].ConfigFile())
	fmt.Printf("  failover: kill -9 $(head -1 %s/<leader>/data/postmaster.pid)\n", dir)
	dsn := c.URL(hacluster.Superuser, database)
	fmt.Printf("  DATABASE_URL=%s\n\n", dsn)

	// devstack gets the terminal's Ctrl-C itself (same process group) and
	// stops its services; we wait for it, then stop the cluster.
	cmd := exec.Command(devstack, "-bin", binDir, "-data", "", "-grpcurl", grpcurl)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// SIGTERM (or a Ctrl-C that devstack did not get): pass it on.
		_ = cmd.Process.Signal(syscall.SIGINT)
		err = <-done
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && ctx.Err() != nil {
		return nil
	}
	return err
}
