// Command mkimage writes the container image of one service: a static
// Linux binary at /<service> and an empty /tmp, nothing else, as a `docker
// save` tarball (and optionally an OCI image layout). It needs no Docker
// daemon, no base image and no network, and the same binary with the same
// flags gives the same image, byte for byte.
//
//	mkimage -binary .build/images/bin/oplog -image platforma/oplog:v1.2.0 \
//	    -port 50053 -port 9453 -out .build/images/oplog.tar
//
// The image's timestamps come from -created, else SOURCE_DATE_EPOCH, else
// the Unix epoch: never the build's clock.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/platforma/platforma/deploy/images"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		binary   = fs.String("binary", "", "the static Linux service binary (required)")
		ref      = fs.String("image", "", "the image's name and tag, e.g. platforma/oplog:v1.2.0; its last path element names /<service> (required)")
		out      = fs.String("out", "", "write the docker-save tarball here")
		ociDir   = fs.String("oci-layout", "", "also write an OCI image layout into this new or empty directory (keeps OCI media types for crane push)")
		user     = fs.String("user", images.DefaultUser, "numeric uid:gid the service runs as; root is refused")
		created  = fs.String("created", "", "image timestamp, Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
		source   = fs.String("source", "", "label "+images.LabelSource)
		revision = fs.String("revision", "", "label "+images.LabelRevision)
		version  = fs.String("version", "", "label "+images.LabelVersion+" (default the tag)")
		ports    listFlag
	)
	fs.Var(&ports, "port", "exposed port, <n> or <n>/tcp|udp; repeat or separate with commas")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var problems []string
	if *binary == "" {
		problems = append(problems, "-binary is required")
	}
	if *ref == "" {
		problems = append(problems, "-image is required")
	}
	if *out == "" && *ociDir == "" {
		problems = append(problems, "-out or -oci-layout is required")
	}
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	stamp, err := createdTime(*created, getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "mkimage: %s\n", strings.Join(problems, "; "))
		return 2
	}

	bin, err := images.ReadBinary(*binary)
	if err != nil {
		fmt.Fprintf(stderr, "mkimage: %v\n", err)
		return 1
	}
	built, err := images.Build(images.Spec{
		Binary: bin, Ref: *ref, User: *user, Ports: ports, Created: stamp,
		Source: *source, Revision: *revision, Version: *version,
	})
	if err != nil {
		fmt.Fprintf(stderr, "mkimage: %v\n", err)
		return 1
	}
	if *out != "" {
		if err := images.WriteTarball(*out, built); err != nil {
			fmt.Fprintf(stderr, "mkimage: %v\n", err)
			return 1
		}
	}
	if *ociDir != "" {
		if err := images.WriteLayout(*ociDir, built); err != nil {
			fmt.Fprintf(stderr, "mkimage: %v\n", err)
			return 1
		}
	}
	digest, err := built.Image.Digest()
	if err != nil {
		fmt.Fprintf(stderr, "mkimage: %v\n", err)
		return 1
	}
	id, err := built.Image.ConfigName()
	if err != nil {
		fmt.Fprintf(stderr, "mkimage: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s linux/%s image id %s manifest %s\n", built.Tag, bin.Arch, id, digest)
	for _, dst := range []string{*out, *ociDir} {
		if dst != "" {
			fmt.Fprintf(stdout, "  wrote %s\n", dst)
		}
	}
	return 0
}

// createdTime is -created, else SOURCE_DATE_EPOCH (the reproducible-builds
// convention: the last commit's time), else the Unix epoch.
func createdTime(flagValue, env string) (time.Time, error) {
	v, from := flagValue, "-created"
	if v == "" {
		v, from = env, "SOURCE_DATE_EPOCH"
	}
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, fmt.Errorf("%s %q: want Unix seconds", from, v)
	}
	return time.Unix(secs, 0).UTC(), nil
}
