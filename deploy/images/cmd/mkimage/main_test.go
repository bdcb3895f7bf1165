package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platforma/platforma/deploy/images"
	"github.com/platforma/platforma/deploy/images/internal/testbin"
)

func TestCreatedTime(t *testing.T) {
	cases := []struct {
		name, flag, env string
		want            int64
		wantErr         string
	}{
		{name: "nothing: the epoch"},
		{name: "SOURCE_DATE_EPOCH", env: "1767225600", want: 1767225600},
		{name: "the flag wins", flag: "1700000000", env: "1767225600", want: 1700000000},
		{name: "bad flag", flag: "2026-01-01", wantErr: `-created "2026-01-01"`},
		{name: "bad env", env: "yesterday", wantErr: `SOURCE_DATE_EPOCH "yesterday"`},
		{name: "negative", env: "-5", wantErr: "want Unix seconds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := createdTime(tc.flag, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error saying %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(time.Unix(tc.want, 0)) {
				t.Fatalf("got %v, %v; want %v", got, err, time.Unix(tc.want, 0).UTC())
			}
		})
	}
}

// The command as the Makefile runs it: the tarball it writes passes the
// checker, and SOURCE_DATE_EPOCH reaches the image.
func TestMkimageWritesACheckedImage(t *testing.T) {
	bin := testbin.FakeService(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "fakesvc.tar")
	env := map[string]string{"SOURCE_DATE_EPOCH": "1767225600"}
	var stdout, stderr bytes.Buffer
	code := run([]string{
		"-binary", bin, "-image", "platforma/fakesvc:v9", "-port", "50099", "-port", "9499/tcp",
		"-revision", "abc", "-out", out, "-oci-layout", filepath.Join(dir, "oci"),
	}, func(k string) string { return env[k] }, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "platforma/fakesvc:v9 linux/") {
		t.Fatalf("stdout %q", stdout.String())
	}
	rep, err := images.Check(images.CheckOptions{Tarball: out, Binary: bin, Ref: "platforma/fakesvc:v9", Run: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Labels[images.LabelCreated] != "2026-01-01T00:00:00Z" || rep.Labels[images.LabelRevision] != "abc" {
		t.Fatalf("labels %v", rep.Labels)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci", "index.json")); err != nil {
		t.Fatalf("OCI layout: %v", err)
	}
}

func TestMkimageRefuses(t *testing.T) {
	bin := testbin.FakeService(t)
	dir := t.TempDir()
	dynamic := testbin.ELF{Interp: "/lib64/ld-linux-x86-64.so.2"}.Write(t, dir, "dyn")
	out := filepath.Join(dir, "x.tar")
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no flags", nil, 2, "-binary is required; -image is required; -out or -oci-layout is required"},
		{"stray argument", []string{"-binary", bin, "-image", "platforma/fakesvc:v1", "-out", out, "extra"}, 2, "unexpected arguments"},
		{"bad epoch", []string{"-binary", bin, "-image", "platforma/fakesvc:v1", "-out", out, "-created", "now"}, 2, "want Unix seconds"},
		{"dynamic binary", []string{"-binary", dynamic, "-image", "platforma/fakesvc:v1", "-out", out}, 1, "dynamically linked"},
		{"root", []string{"-binary", bin, "-image", "platforma/fakesvc:v1", "-out", out, "-user", "0:0"}, 1, "is root"},
		{"no tag", []string{"-binary", bin, "-image", "platforma/fakesvc", "-out", out}, 1, "has no tag"},
		{"missing binary", []string{"-binary", filepath.Join(dir, "nope"), "-image", "platforma/fakesvc:v1", "-out", out}, 1, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, func(string) string { return "" }, &stdout, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.wantCode, tc.wantErr)
			}
			// A refused build leaves nothing behind for `docker load`.
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("%s exists after a refused build", out)
			}
		})
	}
}

func TestMain(m *testing.M) { testbin.Main(m) }
