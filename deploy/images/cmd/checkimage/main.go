// Command checkimage checks an image tarball written by mkimage against
// the binary it should hold: the blobs match their digests, /<service> is
// that binary byte for byte, static and not owned by root, the user is
// numeric and not root, the entrypoint is the binary; then it runs the
// binary as the image's user (dropping root when run as root) and checks
// the exposed ports are the binary's default ones.
//
//	checkimage -tarball .build/images/oplog.tar -binary .build/images/bin/oplog
//
// Exit status: 0 the image passed, 1 it did not, 2 bad usage.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/platforma/platforma/deploy/images"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("checkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		tarballPath = fs.String("tarball", "", "the image tarball (required)")
		binary      = fs.String("binary", "", "the binary the image must hold (required)")
		ref         = fs.String("image", "", "the tag the tarball must carry, e.g. platforma/oplog:v1 (default: its only tag)")
		runIt       = fs.Bool("run", true, "run the binary as the image's user (needs Linux on the image's architecture)")
		timeout     = fs.Duration("timeout", 30*time.Second, "limit for each run of the binary")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *tarballPath == "" || *binary == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "checkimage: -tarball and -binary are required, and nothing else")
		return 2
	}
	rep, err := images.Check(images.CheckOptions{
		Tarball: *tarballPath, Binary: *binary, Ref: *ref, Run: *runIt, RunTimeout: *timeout,
	})
	var probs images.Problems
	if err != nil && !errors.As(err, &probs) {
		fmt.Fprintf(stderr, "checkimage: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s (%s): linux/%s user %s entrypoint %q cmd %q ports %v\n",
		rep.Tag, *tarballPath, rep.Arch, rep.User, rep.Entrypoint, rep.Cmd, rep.ExposedPorts)
	fmt.Fprintf(stdout, "  image id %s, binary sha256 %s owned by uid %d\n", rep.ImageID, rep.BinarySHA256, rep.BinaryUID)
	for _, r := range rep.Runs {
		fmt.Fprintf(stdout, "  ran `%s` as %d:%d: exit %d\n", strings.Join(r.Args, " "), r.UID, r.GID, r.ExitCode)
	}
	if err != nil {
		fmt.Fprintf(stderr, "checkimage: %s: %v\n", *tarballPath, err)
		return 1
	}
	fmt.Fprintf(stdout, "  ok\n")
	return 0
}
