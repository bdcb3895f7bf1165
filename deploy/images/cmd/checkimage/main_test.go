package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platforma/platforma/deploy/images"
	"github.com/platforma/platforma/deploy/images/internal/testbin"
)

func TestCheckimageExitCodes(t *testing.T) {
	bin := testbin.FakeService(t)
	dir := t.TempDir()
	b, err := images.ReadBinary(bin)
	if err != nil {
		t.Fatal(err)
	}
	built, err := images.Build(images.Spec{Binary: b, Ref: "platforma/fakesvc:v1", Ports: []string{"50099", "9499"}})
	if err != nil {
		t.Fatal(err)
	}
	tb := filepath.Join(dir, "fakesvc.tar")
	if err := images.WriteTarball(tb, built); err != nil {
		t.Fatal(err)
	}
	other := testbin.ELF{}.Write(t, dir, "other")

	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"passes", []string{"-tarball", tb, "-binary", bin, "-image", "platforma/fakesvc:v1"}, 0, "ran `fakesvc serve -h`", ""},
		{"passes without running", []string{"-tarball", tb, "-binary", bin, "-run=false"}, 0, "  ok", ""},
		{"another binary", []string{"-tarball", tb, "-binary", other}, 1, "platforma/fakesvc:v1", "/fakesvc has sha256"},
		{"another tag", []string{"-tarball", tb, "-binary", bin, "-image", "platforma/oplog:v1"}, 1, "", "want platforma/oplog:v1"},
		{"no tarball", []string{"-tarball", filepath.Join(dir, "none.tar"), "-binary", bin}, 1, "", "no such file"},
		{"usage", []string{"-binary", bin}, 2, "", "-tarball and -binary are required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.wantCode || !strings.Contains(stdout.String(), tc.wantStdout) || !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Fatalf("exit %d\nstdout %s\nstderr %s\nwant %d, %q, %q", code, stdout.String(), stderr.String(), tc.wantCode, tc.wantStdout, tc.wantStderr)
			}
		})
	}
}

func TestMain(m *testing.M) { testbin.Main(m) }
