package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultUser is the images' user: 65532 is "nonroot" in distroless and
// other minimal images, so clusters that pin a UID range for such images
// already allow it. Numeric, because an empty image has no /etc/passwd to
// resolve a name with.
const DefaultUser = "65532:65532"

// DefaultCmd is what the entrypoint runs without arguments: the server.
// Migration jobs override it with ["migrate"].
var DefaultCmd = []string{"serve"}

// OCI label (and manifest annotation) keys, from the image-spec's
// pre-defined annotations.
const (
	LabelTitle    = "org.opencontainers.image.title"
	LabelSource   = "org.opencontainers.image.source"
	LabelRevision = "org.opencontainers.image.revision"
	LabelVersion  = "org.opencontainers.image.version"
	LabelCreated  = "org.opencontainers.image.created"
)

// Spec is one image to build.
type Spec struct {
	// Binary is the static service binary (ReadBinary).
	Binary *Binary
	// Ref is the image's name with its tag, e.g. platforma/oplog:v1.2.0.
	// Its last path element names the service and the file /<service>.
	Ref string
	// User is "uid" or "uid:gid", both non-zero; empty means DefaultUser.
	User string
	// Ports are the exposed ports, "50053" or "50053/tcp".
	Ports []string
	// Created stamps the config, the history and the layer's file: the
	// commit time for a release (SOURCE_DATE_EPOCH), the Unix epoch
	// otherwise, never the build's clock, so rebuilds are identical.
	Created time.Time
	// Source, Revision and Version become OCI labels when set; Version
	// defaults to the tag.
	Source, Revision, Version string
}

// Built is an image ready to be written.
type Built struct {
	Image   v1.Image
	Tag     name.Tag
	Service string
}

var (
	serviceRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	portRe    = regexp.MustCompile(`^([0-9]{1,5})(/(tcp|udp))?$`)
)

// ServiceOf returns the service a reference names: its last path element.
func ServiceOf(tag name.Tag) string {
	repo := tag.RepositoryStr()
	return repo[strings.LastIndex(repo, "/")+1:]
}

// ParseTag parses an image name with an explicit tag, e.g.
// platforma/oplog:v1 (a tarball's tag is what `docker load` names the
// image, so "latest" by omission would be a surprise).
func ParseTag(ref string) (name.Tag, error) {
	if strings.LastIndex(ref, ":") <= strings.LastIndex(ref, "/") {
		return name.Tag{}, fmt.Errorf("image name %q has no tag (want e.g. platforma/oplog:v1)", ref)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image name %q: %w", ref, err)
	}
	return tag, nil
}

// ParseUser parses "uid" or "uid:gid", numeric only. A missing gid is
// reported as -1.
func ParseUser(user string) (uid, gid int, err error) {
	u, g, hasGID := strings.Cut(user, ":")
	if uid, err = strconv.Atoi(u); err != nil || uid < 0 {
		return 0, 0, fmt.Errorf("user %q: the uid must be numeric (an empty image has no /etc/passwd)", user)
	}
	gid = -1
	if hasGID {
		if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
			return 0, 0, fmt.Errorf("user %q: the gid must be numeric (an empty image has no /etc/group)", user)
		}
	}
	return uid, gid, nil
}

// checkUser refuses root: uid 0, and gid 0, whose group owns much of a
// host's files.
func checkUser(user string) (uid, gid int, err error) {
	uid, gid, err = ParseUser(user)
	if err != nil {
		return 0, 0, err
	}
	if uid == 0 {
		return 0, 0, fmt.Errorf("user %q is root: the services run as a non-root uid", user)
	}
	if gid == 0 {
		return 0, 0, fmt.Errorf("user %q has gid 0 (root's group)", user)
	}
	return uid, gid, nil
}

// NormalizePorts turns "50053" into "50053/tcp", checks the range, sorts
// and removes duplicates.
func NormalizePorts(ports []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, p := range ports {
		m := portRe.FindStringSubmatch(p)
		if m == nil {
			return nil, fmt.Errorf("port %q: want <number> or <number>/tcp|udp", p)
		}
		n, _ := strconv.Atoi(m[1])
		if n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q: out of range", p)
		}
		proto := m[3]
		if proto == "" {
			proto = "tcp"
		}
		key := fmt.Sprintf("%d/%s", n, proto)
		if !seen[key] {
			seen[key] = true
			out = append(out, key)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Build assembles the image in memory. It rereads the binary and refuses
// it if it changed since ReadBinary: the layer must hold exactly the bytes
// that were inspected.
func Build(spec Spec) (*Built, error) {
	if spec.Binary == nil {
		return nil, errors.New("no binary")
	}
	tag, err := ParseTag(spec.Ref)
	if err != nil {
		return nil, err
	}
	svc := ServiceOf(tag)
	if !serviceRe.MatchString(svc) {
		return nil, fmt.Errorf("image name %q: %q is not a service name", spec.Ref, svc)
	}
	user := spec.User
	if user == "" {
		user = DefaultUser
	}
	uid, gid, err := checkUser(user)
	if err != nil {
		return nil, err
	}
	if gid < 0 {
		gid = uid
	}
	ports, err := NormalizePorts(spec.Ports)
	if err != nil {
		return nil, err
	}
	created := spec.Created.UTC().Truncate(time.Second)
	if created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}

	content, err := os.ReadFile(spec.Binary.Path)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(content); hex.EncodeToString(sum[:]) != spec.Binary.SHA256 {
		return nil, fmt.Errorf("%s changed after it was inspected", spec.Binary.Path)
	}

	layerTar, err := binaryLayer(svc, content, uid, gid, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}

	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "mkimage: /" + svc,
			Comment:   "platforma deploy/images",
		},
	})
	if err != nil {
		return nil, err
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = spec.Binary.Arch
	cf.Created = v1.Time{Time: created}
	cf.Config.User = user
	cf.Config.Entrypoint = []string{"/" + svc}
	cf.Config.Cmd = append([]string(nil), DefaultCmd...)
	cf.Config.WorkingDir = "/"
	if len(ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	labels := map[string]string{LabelTitle: svc}
	version := spec.Version
	if version == "" {
		version = tag.TagStr()
	}
	for k, v := range map[string]string{LabelSource: spec.Source, LabelRevision: spec.Revision, LabelVersion: version} {
		if v != "" {
			labels[k] = v
		}
	}
	if created.Unix() != 0 {
		labels[LabelCreated] = created.Format(time.RFC3339)
	}
	cf.Config.Labels = labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	// The labels again as manifest annotations, which registries and
	// `crane manifest` show without fetching the config. (The docker-save
	// tarball has no manifest; the OCI layout and pushes from it keep
	// them.)
	withAnn, ok := mutate.Annotations(img, labels).(v1.Image)
	if !ok {
		return nil, errors.New("annotating the manifest did not give an image")
	}
	return &Built{Image: withAnn, Tag: tag, Service: svc}, nil
}

// binaryLayer is the layer's tar: /<svc> and an empty /tmp, nothing else
// (no shell, no /etc, no CA bundle: the binary is static and carries its
// roots). /tmp is there because OpLogService's life cycle stages export
// files in os.TempDir: with `docker run` it just works; under Kubernetes
// with a read-only root file system an emptyDir must be mounted there.
func binaryLayer(svc string, content []byte, uid, gid int, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// USTAR: no PAX records (which would carry atime/ctime), the format
	// every runtime reads.
	tmp := &tar.Header{
		Typeflag: tar.TypeDir,
		Name:     "tmp/",
		Mode:     0o1777, // like any /tmp: everyone writes, the sticky bit guards others' files
		ModTime:  mtime,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(tmp); err != nil {
		return nil, err
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     svc,
		Mode:     0o755,
		Uid:      uid,
		Gid:      gid,
		Size:     int64(len(content)),
		ModTime:  mtime,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteTarball writes the image as a `docker save` tarball tagged with
// its reference: what `docker load`, `podman load`, `kind load
// image-archive` and `crane push` read. It writes a temporary file beside
// path and renames it, so a failed build leaves no half tarball.
func WriteTarball(path string, b *Built) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tarball.Write(b.Tag, b.Image, tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteLayout writes the image as an OCI image layout in dir, which must
// not exist or be empty. Unlike the docker-save tarball, whose format has
// no manifest and comes back with Docker media types, a layout keeps the
// OCI manifest and its annotations: `crane push <dir> <ref>` pushes the
// very digest Build computed.
func WriteLayout(dir string, b *Built) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(b.Image, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": b.Tag.String(),
	}))
}
