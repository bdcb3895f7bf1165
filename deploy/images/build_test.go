package images

import (
	"archive/tar"
	"bytes"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/platforma/platforma/deploy/images/internal/testbin"
)

// fakeSpec is a valid spec for the fake service.
func fakeSpec(t *testing.T) Spec {
	t.Helper()
	bin, err := ReadBinary(testbin.FakeService(t))
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Binary:   bin,
		Ref:      "platforma/fakesvc:v1.2.3",
		Ports:    []string{"9499", "50099/tcp"},
		Created:  time.Unix(1767225600, 0), // 2026-01-01
		Source:   "https://example.invalid/platforma",
		Revision: "0123456789abcdef",
	}
}

func mustBuild(t *testing.T, spec Spec) *Built {
	t.Helper()
	b, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildImage(t *testing.T) {
	spec := fakeSpec(t)
	b := mustBuild(t, spec)
	if b.Service != "fakesvc" || b.Tag.String() != "platforma/fakesvc:v1.2.3" {
		t.Fatalf("service %q tag %q", b.Service, b.Tag)
	}

	// OCI media types throughout, for registries that are strict about it.
	m, err := b.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Fatalf("manifest %s, config %s", m.MediaType, m.Config.MediaType)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Fatalf("layers %+v: want one %s", m.Layers, types.OCILayer)
	}

	cf, err := b.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	created := time.Unix(1767225600, 0).UTC()
	c := cf.Config
	switch {
	case cf.OS != "linux" || cf.Architecture != runtime.GOARCH:
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	case !cf.Created.Time.Equal(created):
		t.Errorf("created %v, want %v", cf.Created, created)
	case c.User != "65532:65532":
		t.Errorf("user %q", c.User)
	case !slices.Equal(c.Entrypoint, []string{"/fakesvc"}) || !slices.Equal(c.Cmd, []string{"serve"}):
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	case !slices.Equal(slices.Sorted(maps.Keys(c.ExposedPorts)), []string{"50099/tcp", "9499/tcp"}):
		t.Errorf("ports %v", c.ExposedPorts)
	case len(c.Env) != 0:
		t.Errorf("env %q: the image sets none", c.Env)
	case len(cf.History) != 1 || !cf.History[0].Created.Time.Equal(created):
		t.Errorf("history %+v", cf.History)
	}
	wantLabels := map[string]string{
		LabelTitle:    "fakesvc",
		LabelSource:   "https://example.invalid/platforma",
		LabelRevision: "0123456789abcdef",
		LabelVersion:  "v1.2.3",
		LabelCreated:  "2026-01-01T00:00:00Z",
	}
	if !maps.Equal(c.Labels, wantLabels) {
		t.Errorf("labels %v, want %v", c.Labels, wantLabels)
	}
	if !maps.Equal(m.Annotations, wantLabels) {
		t.Errorf("annotations %v, want the labels", m.Annotations)
	}

	// The layer: an empty /tmp for everyone, /fakesvc, and nothing else.
	layers, err := b.Image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	tmp, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if tmp.Name != "tmp/" || tmp.Typeflag != tar.TypeDir || tmp.Mode != 0o1777 || tmp.Uid != 0 || !tmp.ModTime.Equal(created) {
		t.Errorf("first entry %s type %c mode %o uid %d mtime %v: want /tmp 1777", tmp.Name, tmp.Typeflag, tmp.Mode, tmp.Uid, tmp.ModTime)
	}
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	content, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(spec.Binary.Path)
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Name != "fakesvc" || hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o755 ||
		hdr.Uid != 65532 || hdr.Gid != 65532 || !hdr.ModTime.Equal(created) || !bytes.Equal(content, want) {
		t.Errorf("entry %s type %c mode %o owner %d:%d mtime %v, %d bytes (content equal: %v)",
			hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid, hdr.ModTime, len(content), bytes.Equal(content, want))
	}
	if next, err := tr.Next(); err != io.EOF {
		t.Errorf("a second entry %v (%v)", next, err)
	}
}

// Without a timestamp the image is stamped with the Unix epoch, and the
// version label falls back to the tag; no created label then, since 1970
// would be a lie.
func TestBuildDefaults(t *testing.T) {
	spec := fakeSpec(t)
	spec.Created, spec.Source, spec.Revision, spec.User = time.Time{}, "", "", ""
	cf, err := mustBuild(t, spec).Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Created.Unix() != 0 || cf.Config.User != DefaultUser {
		t.Fatalf("created %v user %q", cf.Created, cf.Config.User)
	}
	want := map[string]string{LabelTitle: "fakesvc", LabelVersion: "v1.2.3"}
	if !maps.Equal(cf.Config.Labels, want) {
		t.Fatalf("labels %v, want %v", cf.Config.Labels, want)
	}
}

// The same binary and flags give the same image, digest and tarball bytes,
// wherever the binary lies and whenever it is built; what does change the
// inputs changes the digest, so the equality is not vacuous.
func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	spec := fakeSpec(t)

	digestAndTarball := func(spec Spec, name string) (v1.Hash, []byte) {
		t.Helper()
		b := mustBuild(t, spec)
		d, err := b.Image.Digest()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := WriteTarball(p, b); err != nil {
			t.Fatal(err)
		}
		tb, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return d, tb
	}

	d1, tar1 := digestAndTarball(spec, "1.tar")
	// A copy elsewhere, built a second later.
	moved := spec
	moved.Binary, _ = ReadBinary(testbin.Copy(t, spec.Binary.Path, t.TempDir(), "fakesvc"))
	time.Sleep(1100 * time.Millisecond)
	d2, tar2 := digestAndTarball(moved, "2.tar")
	if d1 != d2 || !bytes.Equal(tar1, tar2) {
		t.Fatalf("two builds differ: %s vs %s (tarballs equal: %v)", d1, d2, bytes.Equal(tar1, tar2))
	}

	other := spec
	other.Created = spec.Created.Add(time.Second)
	if d, _ := digestAndTarball(other, "3.tar"); d == d1 {
		t.Fatal("another timestamp gave the same digest")
	}
	patched, err := os.ReadFile(spec.Binary.Path)
	if err != nil {
		t.Fatal(err)
	}
	patched = append(patched, 0) // trailing bytes: still a valid ELF
	p := filepath.Join(t.TempDir(), "fakesvc")
	if err := os.WriteFile(p, patched, 0o755); err != nil {
		t.Fatal(err)
	}
	changed := spec
	if changed.Binary, err = ReadBinary(p); err != nil {
		t.Fatal(err)
	}
	if d, _ := digestAndTarball(changed, "4.tar"); d == d1 {
		t.Fatal("another binary gave the same digest")
	}
}

func TestBuildRefuses(t *testing.T) {
	cases := []struct {
		name    string
		change  func(*Spec)
		wantErr string
	}{
		{"root user", func(s *Spec) { s.User = "0" }, "is root"},
		{"root uid and gid", func(s *Spec) { s.User = "0:0" }, "is root"},
		{"root group", func(s *Spec) { s.User = "65532:0" }, "gid 0"},
		{"user name", func(s *Spec) { s.User = "nonroot" }, "uid must be numeric"},
		{"group name", func(s *Spec) { s.User = "65532:nogroup" }, "gid must be numeric"},
		{"negative uid", func(s *Spec) { s.User = "-1" }, "uid must be numeric"},
		{"no tag", func(s *Spec) { s.Ref = "platforma/fakesvc" }, "has no tag"},
		{"registry port but no tag", func(s *Spec) { s.Ref = "localhost:5000/platforma/fakesvc" }, "has no tag"},
		{"bad tag", func(s *Spec) { s.Ref = "platforma/fakesvc:v1!" }, `image name "platforma/fakesvc:v1!": `},
		{"bad service name", func(s *Spec) { s.Ref = "platforma/Fake:v1" }, "image name"},
		{"port name", func(s *Spec) { s.Ports = []string{"grpc"} }, `port "grpc"`},
		{"port range", func(s *Spec) { s.Ports = []string{"70000"} }, "out of range"},
		{"port zero", func(s *Spec) { s.Ports = []string{"0/tcp"} }, "out of range"},
		{"port protocol", func(s *Spec) { s.Ports = []string{"80/sctp"} }, `port "80/sctp"`},
		{"no binary", func(s *Spec) { s.Binary = nil }, "no binary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := fakeSpec(t)
			tc.change(&spec)
			_, err := Build(spec)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error saying %q", err, tc.wantErr)
			}
		})
	}
}

// The layer must hold the bytes ReadBinary inspected: a binary replaced in
// between (a racing `go build`, say) is refused, not packed unchecked.
func TestBuildRefusesBinaryChangedAfterInspection(t *testing.T) {
	spec := fakeSpec(t)
	p := testbin.Copy(t, spec.Binary.Path, t.TempDir(), "fakesvc")
	bin, err := ReadBinary(p)
	if err != nil {
		t.Fatal(err)
	}
	spec.Binary = bin
	testbin.ELF{Interp: "/lib/ld.so"}.Write(t, filepath.Dir(p), "fakesvc")
	if _, err := Build(spec); err == nil || !strings.Contains(err.Error(), "changed after it was inspected") {
		t.Fatalf("got %v", err)
	}
}

func TestNormalizePorts(t *testing.T) {
	got, err := NormalizePorts([]string{"9453", "50053/tcp", "9453/tcp", "53/udp"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"50053/tcp", "53/udp", "9453/tcp"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// The OCI layout keeps what the docker-save tarball cannot: the OCI
// manifest Build made, with its digest and annotations, under the tag.
func TestWriteLayout(t *testing.T) {
	b := mustBuild(t, fakeSpec(t))
	dir := filepath.Join(t.TempDir(), "layout")
	if err := WriteLayout(dir, b); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	want, err := b.Image.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%d manifests", len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.Digest != want || d.MediaType != types.OCIManifestSchema1 ||
		d.Annotations["org.opencontainers.image.ref.name"] != "platforma/fakesvc:v1.2.3" {
		t.Fatalf("descriptor %+v; want digest %s", d, want)
	}
	img, err := idx.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := img.Digest(); err != nil || got != want {
		t.Fatalf("image digest %s (%v)", got, err)
	}
	// A second write into the same directory would mix two images.
	if err := WriteLayout(dir, b); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second write: %v", err)
	}
}
