package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// CheckOptions says what to check a tarball against.
type CheckOptions struct {
	// Tarball is the docker-save tarball (WriteTarball's format).
	Tarball string
	// Binary is the file the image must hold, byte for byte.
	Binary string
	// Ref, if set, is the tag the tarball must carry, e.g.
	// platforma/oplog:v1. Otherwise the tarball must carry exactly one.
	Ref string
	// Run executes the image's binary as the image's user (see RunBinary).
	// It needs a Linux machine of the image's architecture.
	Run bool
	// RunTimeout bounds each run; zero means 30 s.
	RunTimeout time.Duration
}

// Report is what Check found.
type Report struct {
	Tag          string
	ImageID      string // the config's digest, what `docker images` shows
	Arch         string
	User         string
	Entrypoint   []string
	Cmd          []string
	ExposedPorts []string
	Labels       map[string]string
	BinarySHA256 string
	BinaryUID    int
	Runs         []Run
}

// Problems is every way a tarball failed its check, all at once.
type Problems []string

func (p Problems) Error() string {
	return "image check failed:\n  " + strings.Join(p, "\n  ")
}

// Check loads a tarball the way `docker load` and `crane push` would and
// verifies that it is the image this package builds for the binary: the
// binary at /<service> byte for byte and static, the blobs matching their
// digests, a numeric non-root user, the entrypoint and command. With
// opts.Run it also runs the binary as that user and checks that the ports
// the image exposes are the ones the binary listens on by default. Every
// problem found is in the returned Problems.
func Check(opts CheckOptions) (*Report, error) {
	var probs Problems
	fail := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	rep := &Report{BinaryUID: -1}

	want, err := fileSHA256(opts.Binary)
	if err != nil {
		return nil, err
	}

	// The blobs by the names manifest.json gives them, hashed in one pass.
	blobs, err := hashTarEntries(opts.Tarball)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Tarball, err)
	}
	opener := func() (io.ReadCloser, error) { return os.Open(opts.Tarball) }
	manifest, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("%s: reading manifest.json: %w", opts.Tarball, err)
	}
	if len(manifest) != 1 {
		return nil, fmt.Errorf("%s holds %d images; want one", opts.Tarball, len(manifest))
	}
	desc := manifest[0]
	switch {
	case opts.Ref != "":
		rep.Tag = opts.Ref
		if !slices.Contains(desc.RepoTags, opts.Ref) {
			// Nothing else to check: `docker load` would not give the
			// image this name.
			return rep, Problems{fmt.Sprintf("tags %v: want %s", desc.RepoTags, opts.Ref)}
		}
	case len(desc.RepoTags) == 1:
		rep.Tag = desc.RepoTags[0]
	default:
		return nil, fmt.Errorf("%s has tags %v: say which one with a reference", opts.Tarball, desc.RepoTags)
	}
	tag, err := ParseTag(rep.Tag)
	if err != nil {
		return nil, err
	}
	svc := ServiceOf(tag)

	// The file names are the digests: docker load refuses a config that
	// does not hash to its name, and so do we. (LoadManifest's image
	// recomputes digests from the bytes, so it would not notice.)
	for _, blob := range append([]string{desc.Config}, desc.Layers...) {
		got, ok := blobs[blob]
		if !ok {
			fail("%s: listed in manifest.json but not in the tarball", blob)
			continue
		}
		if named := digestInName(blob); named != "" && named != got {
			fail("%s: its content hashes to sha256:%s (tampered or corrupt)", blob, got)
		}
	}

	img, err := tarball.Image(opener, &tag)
	if err != nil {
		return nil, fmt.Errorf("%s: loading %s: %w", opts.Tarball, rep.Tag, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", opts.Tarball, err)
	}
	if id, err := img.ConfigName(); err == nil {
		rep.ImageID = id.String()
	}
	rep.Arch, rep.User = cf.Architecture, cf.Config.User
	rep.Entrypoint, rep.Cmd, rep.Labels = cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Labels
	for p := range cf.Config.ExposedPorts {
		rep.ExposedPorts = append(rep.ExposedPorts, p)
	}
	sort.Strings(rep.ExposedPorts)

	if cf.OS != "linux" {
		fail("config os %q: want linux", cf.OS)
	}
	uid, gid, err := checkUser(cf.Config.User)
	if err != nil {
		fail("config: %v", err)
	}
	if gid < 0 {
		gid = uid
	}
	if want := []string{"/" + svc}; !slices.Equal(cf.Config.Entrypoint, want) {
		fail("entrypoint %q: want %q", cf.Config.Entrypoint, want)
	}
	if !slices.Equal(cf.Config.Cmd, DefaultCmd) {
		fail("cmd %q: want %q", cf.Config.Cmd, DefaultCmd)
	}
	if len(cf.Config.ExposedPorts) == 0 {
		fail("the config exposes no port")
	}

	// The layers: each must match its diff_id (what docker load and
	// containerd verify), and together they must hold the binary.
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("%s: layers: %w", opts.Tarball, err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		fail("%d layers but %d diff_ids in the config", len(layers), len(cf.RootFS.DiffIDs))
	}
	tmp, err := os.MkdirTemp("", "checkimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	extracted := filepath.Join(tmp, svc)
	var found *tar.Header
	for i, l := range layers {
		hdr, diffID, err := scanLayer(l, svc, extracted)
		if err != nil {
			fail("layer %d: %v", i, err)
			continue
		}
		if i < len(cf.RootFS.DiffIDs) && cf.RootFS.DiffIDs[i] != diffID {
			fail("layer %d: its content hashes to %s but the config says %s (tampered or corrupt)", i, diffID, cf.RootFS.DiffIDs[i])
		}
		if hdr != nil {
			found = hdr
		}
	}
	if found == nil {
		fail("no /%s in the image", svc)
		return rep, probs
	}
	if found.Typeflag != tar.TypeReg {
		fail("/%s is not a regular file (tar type %q)", svc, found.Typeflag)
		return rep, probs
	}
	rep.BinaryUID = found.Uid
	if found.Uid == 0 {
		fail("/%s is owned by uid 0", svc)
	}
	if found.Mode&0o111 != 0o111 {
		fail("/%s has mode %04o: not executable by everyone", svc, found.Mode&0o7777)
	}
	if found.Mode&0o022 != 0 {
		fail("/%s has mode %04o: writable by group or others", svc, found.Mode&0o7777)
	}
	got, err := fileSHA256(extracted)
	if err != nil {
		return nil, err
	}
	rep.BinarySHA256 = got
	if got != want {
		fail("/%s has sha256 %s; %s has %s", svc, got, opts.Binary, want)
	}
	bin, err := ReadBinary(extracted)
	if err != nil {
		fail("/%s: %v", svc, strings.TrimPrefix(err.Error(), extracted+": "))
		return rep, probs
	}
	if bin.Arch != cf.Architecture {
		fail("config architecture %q but /%s is %s", cf.Architecture, svc, bin.Arch)
	}

	if opts.Run && uid > 0 {
		if runtime.GOOS != "linux" || runtime.GOARCH != bin.Arch {
			fail("cannot run a linux/%s binary on %s/%s (check without running)", bin.Arch, runtime.GOOS, runtime.GOARCH)
			return rep, probs
		}
		timeout := opts.RunTimeout
		if timeout == 0 {
			timeout = 30 * time.Second
		}
		runs, ports, err := probeBinary(extracted, svc, uid, gid, timeout)
		rep.Runs = runs
		if err != nil {
			fail("%v", err)
		} else if !slices.Equal(ports, rep.ExposedPorts) {
			fail("the image exposes %v but %s listens on %v by default", rep.ExposedPorts, svc, ports)
		}
	}
	if len(probs) > 0 {
		return rep, probs
	}
	return rep, nil
}

// scanLayer reads one layer: it hashes the uncompressed stream (the
// diff_id) and writes the entry for /svc, if any, to dst. Setuid and
// setgid files are refused wherever they are: a non-root image must give
// no way back to root.
func scanLayer(l v1.Layer, svc, dst string) (*tar.Header, v1.Hash, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, v1.Hash{}, err
	}
	defer rc.Close()
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(rc, h))
	var found *tar.Header
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, v1.Hash{}, err
		}
		if hdr.Mode&(0o4000|0o2000) != 0 {
			return nil, v1.Hash{}, fmt.Errorf("%s is setuid or setgid (mode %04o)", hdr.Name, hdr.Mode&0o7777)
		}
		p := path.Clean("/" + hdr.Name)
		if p == "/.wh."+svc || p == "/.wh..wh..opq" {
			return nil, v1.Hash{}, fmt.Errorf("whiteout %s: the binary's layer must be the last to touch it", hdr.Name)
		}
		if p != "/"+svc {
			continue
		}
		found = hdr
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, v1.Hash{}, err
		}
	}
	// The tar's end is two zero blocks, and writers may pad past them:
	// the diff_id covers every byte of the stream.
	if _, err := io.Copy(io.Discard, io.TeeReader(rc, h)); err != nil {
		return nil, v1.Hash{}, err
	}
	return found, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, nil
}

// hashTarEntries returns the sha256 of every regular file in a tar, by name.
func hashTarEntries(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		// Readers differ on which of two same-named entries they take:
		// ggcr the first, a map the last. Neither may be trusted.
		if _, dup := out[hdr.Name]; dup {
			return nil, fmt.Errorf("%s appears twice", hdr.Name)
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			return nil, err
		}
		out[hdr.Name] = hex.EncodeToString(h.Sum(nil))
	}
}

// digestInName finds the digest a blob's name carries: "sha256:<hex>" for
// configs, "<hex>.tar.gz" for tarball.Write's layers, "blobs/sha256/<hex>"
// in newer docker save output. Old docker save's "<id>/layer.tar" gives ""
// (its id is no content hash).
func digestInName(blob string) string {
	base := strings.TrimPrefix(path.Base(blob), "sha256:")
	if m := blobNameRe.FindStringSubmatch(base); m != nil {
		return m[1]
	}
	return ""
}

var blobNameRe = regexp.MustCompile(`^([0-9a-f]{64})(\.[a-z.]+)?$`)

func fileSHA256(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
