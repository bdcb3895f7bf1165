package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/platforma/platforma/deploy/images/internal/testbin"
)

func writeTarball(t *testing.T, b *Built) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	if err := WriteTarball(p, b); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckAcceptsBuiltImage(t *testing.T) {
	spec := fakeSpec(t)
	tb := writeTarball(t, mustBuild(t, spec))
	rep, err := Check(CheckOptions{Tarball: tb, Binary: spec.Binary.Path, Run: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tag != "platforma/fakesvc:v1.2.3" || rep.User != "65532:65532" || rep.BinaryUID != 65532 ||
		rep.BinarySHA256 != spec.Binary.SHA256 || !strings.HasPrefix(rep.ImageID, "sha256:") ||
		!slices.Equal(rep.ExposedPorts, []string{"50099/tcp", "9499/tcp"}) {
		t.Fatalf("report %+v", rep)
	}
	if len(rep.Runs) != 2 {
		t.Fatalf("runs %+v: want help and serve -h", rep.Runs)
	}
	for _, r := range rep.Runs {
		if r.ExitCode != 0 {
			t.Errorf("%q exited %d", r.Args, r.ExitCode)
		}
	}
	// The fake service prints the ids it ran as: never root, and as root
	// the checker must have switched to the image's user, with no
	// supplementary groups and no environment.
	want := fmt.Sprintf("ids: uid=%d gid=%d", os.Getuid(), os.Getgid())
	if os.Geteuid() == 0 {
		want = "ids: uid=65532 gid=65532 groups=[] env=0"
	}
	if out := rep.Runs[0].Output; !strings.Contains(out, want) || strings.Contains(out, "uid=0 ") {
		t.Fatalf("help output %q: want %q", out, want)
	}
	if rep.Runs[0].UID == 0 {
		t.Fatalf("report says the run was as uid 0")
	}
}

// Without -run the checker still checks everything it can read; it is the
// mode for an arm64 image built on an amd64 machine.
func TestCheckWithoutRunning(t *testing.T) {
	spec := fakeSpec(t)
	tb := writeTarball(t, mustBuild(t, spec))
	rep, err := Check(CheckOptions{Tarball: tb, Binary: spec.Binary.Path, Ref: "platforma/fakesvc:v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 0 {
		t.Fatalf("ran %+v", rep.Runs)
	}
}

// entry is one file of a hand-made layer.
type entry struct {
	hdr     tar.Header
	content []byte
}

// variant builds the image Build makes for spec, then replaces its layer
// with entries (if any) and passes its config through change, keeping
// every digest consistent: what a buggy or hostile builder would produce,
// not a corrupted file.
func variant(t *testing.T, spec Spec, entries []entry, change func(*v1.ConfigFile)) *Built {
	t.Helper()
	good := mustBuild(t, spec)
	cf, err := good.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	img := good.Image
	if entries != nil {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			h := e.hdr
			h.Size = int64(len(e.content))
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(e.content); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		layer, err := tarball.LayerFromReader(bytes.NewReader(buf.Bytes()), tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(empty.Image, layer); err != nil {
			t.Fatal(err)
		}
		fresh, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.RootFS = fresh.RootFS
	}
	cf = cf.DeepCopy()
	if change != nil {
		change(cf)
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return &Built{Image: img, Tag: good.Tag, Service: good.Service}
}

// binaryEntry is /name as Build writes it, with hdr's changes.
func binaryEntry(t *testing.T, name, path string, change func(*tar.Header)) []entry {
	t.Helper()
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Uid: 65532, Gid: 65532}
	if change != nil {
		change(&h)
	}
	return []entry{{hdr: h, content: content}}
}

// rewriteTarball copies a tarball, passing each file through edit: bytes
// changed after the build, the digests in the names left as they were.
func rewriteTarball(t *testing.T, src string, edit func(name string, data []byte) []byte) string {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(f), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		data = edit(h.Name, data)
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "tampered.tar")
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// tamperLayer returns the gzipped layer with one more byte in each file.
func tamperLayer(t *testing.T, gz []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			data = append(data, 0)
		}
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCheckFindsProblems(t *testing.T) {
	spec := fakeSpec(t)
	fake := spec.Binary.Path
	goodTarball := writeTarball(t, mustBuild(t, spec))
	dir := t.TempDir()

	type input struct{ tarball, binary, ref string }
	cases := []struct {
		name    string
		prepare func(t *testing.T) input
		want    []string
	}{
		{
			name: "another binary than the image's",
			prepare: func(t *testing.T) input {
				other := testbin.ELF{}.Write(t, dir, "other")
				return input{goodTarball, other, ""}
			},
			want: []string{"/fakesvc has sha256 " + spec.Binary.SHA256},
		},
		{
			name: "layer changed after the build",
			prepare: func(t *testing.T) input {
				return input{rewriteTarball(t, goodTarball, func(name string, data []byte) []byte {
					if strings.HasSuffix(name, ".tar.gz") {
						return tamperLayer(t, data)
					}
					return data
				}), fake, ""}
			},
			want: []string{".tar.gz: its content hashes to", "layer 0: its content hashes to", "/fakesvc has sha256"},
		},
		{
			name: "config changed to root after the build",
			prepare: func(t *testing.T) input {
				return input{rewriteTarball(t, goodTarball, func(name string, data []byte) []byte {
					if strings.HasPrefix(name, "sha256:") {
						return bytes.ReplaceAll(data, []byte(`"User":"65532:65532"`), []byte(`"User":"0:0"`))
					}
					return data
				}), fake, ""}
			},
			want: []string{"sha256:", "(tampered or corrupt)", `user "0:0" is root`},
		},
		{
			name: "user 0",
			prepare: func(t *testing.T) input {
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) { c.Config.User = "0" })), fake, ""}
			},
			want: []string{`user "0" is root`},
		},
		{
			name: "no user: root",
			prepare: func(t *testing.T) input {
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) { c.Config.User = "" })), fake, ""}
			},
			want: []string{"uid must be numeric"},
		},
		{
			name: "user by name",
			prepare: func(t *testing.T) input {
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) { c.Config.User = "nonroot" })), fake, ""}
			},
			want: []string{"uid must be numeric"},
		},
		{
			name: "root group",
			prepare: func(t *testing.T) input {
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) { c.Config.User = "65532:0" })), fake, ""}
			},
			want: []string{"gid 0"},
		},
		{
			name: "entrypoint a shell",
			prepare: func(t *testing.T) input {
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) {
					c.Config.Entrypoint = []string{"/bin/sh", "-c"}
				})), fake, ""}
			},
			want: []string{`entrypoint ["/bin/sh" "-c"]: want ["/fakesvc"]`},
		},
		{
			name: "cmd not serve",
			prepare: func(t *testing.T) input {
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) { c.Config.Cmd = nil })), fake, ""}
			},
			want: []string{`cmd []: want ["serve"]`},
		},
		{
			name: "ports not the binary's",
			prepare: func(t *testing.T) input {
				s := spec
				s.Ports = []string{"50051", "9499"}
				return input{writeTarball(t, mustBuild(t, s)), fake, ""}
			},
			want: []string{"the image exposes [50051/tcp 9499/tcp] but fakesvc listens on [50099/tcp 9499/tcp] by default"},
		},
		{
			name: "no port",
			prepare: func(t *testing.T) input {
				s := spec
				s.Ports = nil
				return input{writeTarball(t, mustBuild(t, s)), fake, ""}
			},
			want: []string{"exposes no port"},
		},
		{
			name: "binary owned by root",
			prepare: func(t *testing.T) input {
				e := binaryEntry(t, "fakesvc", fake, func(h *tar.Header) { h.Uid, h.Gid = 0, 0 })
				return input{writeTarball(t, variant(t, spec, e, nil)), fake, ""}
			},
			want: []string{"/fakesvc is owned by uid 0"},
		},
		{
			name: "setuid binary",
			prepare: func(t *testing.T) input {
				e := binaryEntry(t, "fakesvc", fake, func(h *tar.Header) { h.Mode = 0o4755 })
				return input{writeTarball(t, variant(t, spec, e, nil)), fake, ""}
			},
			want: []string{"fakesvc is setuid or setgid (mode 4755)"},
		},
		{
			name: "binary writable by others",
			prepare: func(t *testing.T) input {
				e := binaryEntry(t, "fakesvc", fake, func(h *tar.Header) { h.Mode = 0o777 })
				return input{writeTarball(t, variant(t, spec, e, nil)), fake, ""}
			},
			want: []string{"mode 0777: writable by group or others"},
		},
		{
			name: "binary not executable",
			prepare: func(t *testing.T) input {
				e := binaryEntry(t, "fakesvc", fake, func(h *tar.Header) { h.Mode = 0o644 })
				return input{writeTarball(t, variant(t, spec, e, nil)), fake, ""}
			},
			want: []string{"mode 0644: not executable"},
		},
		{
			name: "symlink instead of the binary",
			prepare: func(t *testing.T) input {
				e := []entry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "fakesvc", Linkname: "/bin/sh", Mode: 0o777, Uid: 65532}}}
				return input{writeTarball(t, variant(t, spec, e, nil)), fake, ""}
			},
			want: []string{"/fakesvc is not a regular file"},
		},
		{
			name: "dynamically linked binary",
			prepare: func(t *testing.T) input {
				dyn := testbin.ELF{Interp: "/lib64/ld-linux-x86-64.so.2"}.Write(t, t.TempDir(), "fakesvc")
				e := binaryEntry(t, "fakesvc", dyn, nil)
				return input{writeTarball(t, variant(t, spec, e, nil)), dyn, ""}
			},
			want: []string{"/fakesvc: binary is dynamically linked"},
		},
		{
			name: "architecture not the binary's",
			prepare: func(t *testing.T) input {
				arch := map[string]string{"amd64": "arm64", "arm64": "amd64"}[spec.Binary.Arch]
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) { c.Architecture = arch })), fake, ""}
			},
			want: []string{"config architecture"},
		},
		{
			name: "not linux",
			prepare: func(t *testing.T) input {
				return input{writeTarball(t, variant(t, spec, nil, func(c *v1.ConfigFile) { c.OS = "windows" })), fake, ""}
			},
			want: []string{`config os "windows"`},
		},
		{
			name: "another tag",
			prepare: func(t *testing.T) input {
				return input{goodTarball, fake, "platforma/fakesvc:v2"}
			},
			want: []string{"tags [platforma/fakesvc:v1.2.3]: want platforma/fakesvc:v2"},
		},
		{
			name: "binary under another name",
			prepare: func(t *testing.T) input {
				e := binaryEntry(t, "bin/fakesvc", fake, nil)
				return input{writeTarball(t, variant(t, spec, e, nil)), fake, ""}
			},
			want: []string{"no /fakesvc in the image"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.prepare(t)
			_, err := Check(CheckOptions{Tarball: in.tarball, Binary: in.binary, Ref: in.ref, Run: true})
			var probs Problems
			if !errors.As(err, &probs) {
				t.Fatalf("got %v, want Problems", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems do not say %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestCheckRefusesUnreadableTarballs(t *testing.T) {
	dir := t.TempDir()
	fake := testbin.FakeService(t)
	notTar := filepath.Join(dir, "not.tar")
	if err := os.WriteFile(notTar, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := fakeSpec(t)
	b := mustBuild(t, spec)
	two := filepath.Join(dir, "two.tar")
	other, err := ParseTag("platforma/fakesvc:other")
	if err != nil {
		t.Fatal(err)
	}
	// Two tags of one image: which one to check must be said.
	if err := tarball.MultiRefWriteToFile(two, map[name.Reference]v1.Image{b.Tag: b.Image, other: b.Image}); err != nil {
		t.Fatal(err)
	}
	// A second config after the first: which one a reader sees depends on
	// the reader.
	good := writeTarball(t, b)
	dup := rewriteTarball(t, good, func(_ string, data []byte) []byte { return data })
	appendEntry(t, dup, b)
	cases := []struct{ name, tarball, ref, want string }{
		{"an entry twice", dup, "", "appears twice"},
		{"missing", filepath.Join(dir, "missing.tar"), "", "no such file"},
		{"not a tarball", notTar, "", "not.tar"},
		{"two tags, none chosen", two, "", "say which one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(CheckOptions{Tarball: tc.tarball, Binary: fake, Ref: tc.ref})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Check(CheckOptions{Tarball: two, Binary: fake, Ref: "platforma/fakesvc:other"}); err != nil {
		t.Fatalf("two tags, one chosen: %v", err)
	}
}

func TestDigestInName(t *testing.T) {
	const h = "6d63d977f562a2c4b76944d86f1e349d13d2559756d4fd18ab3e5751e39aaa1f"
	cases := map[string]string{
		"sha256:" + h:           h, // tarball.Write's config
		h + ".tar.gz":           h, // tarball.Write's layers
		h + ".tar":              h,
		"blobs/sha256/" + h:     h,  // docker save since 25
		h + "/layer.tar":        "", // older docker save: an id, not a digest
		"manifest.json":         "",
		"sha256:" + h[:60]:      "",
		"sha256:" + h + "extra": "",
	}
	for in, want := range cases {
		if got := digestInName(in); got != want {
			t.Errorf("digestInName(%q) = %q, want %q", in, got, want)
		}
	}
}

// appendEntry rewrites file with its config blob added again at the end,
// saying "User":"0:0".
func appendEntry(t *testing.T, file string, b *Built) {
	t.Helper()
	name, err := b.Image.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Image.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(src)), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	evil := bytes.ReplaceAll(raw, []byte(`"User":"65532:65532"`), []byte(`"User":"0:0"`))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name.String(), Mode: 0o644, Size: int64(len(evil))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(evil); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
