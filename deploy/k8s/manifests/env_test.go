package manifests

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestImageReferences(t *testing.T) {
	for _, tc := range []struct {
		image, repo, tag, service string
	}{
		{"platforma/oplog:1.0.0", "platforma/oplog", "1.0.0", "oplog"},
		{"platforma/oplog", "platforma/oplog", "", "oplog"},
		{"registry.example.com:5000/platforma/profile:2.1", "registry.example.com:5000/platforma/profile", "2.1", "profile"},
		{"platforma/reviewmeta@sha256:abcd", "platforma/reviewmeta", "", "reviewmeta"},
		{"platforma/reviewmeta:1.0@sha256:abcd", "platforma/reviewmeta", "1.0", "reviewmeta"},
		{"postgres:17.7", "postgres", "17.7", ""},
		{"example.com/notplatforma/oplog:1", "example.com/notplatforma/oplog", "1", ""},
		{"platforma/tools/oplog:1", "platforma/tools/oplog", "1", ""},
	} {
		t.Run(tc.image, func(t *testing.T) {
			assert.Equal(t, tc.repo, ImageRepo(tc.image))
			assert.Equal(t, tc.tag, ImageTag(tc.image))
			assert.Equal(t, tc.service, PlatformService(tc.image))
		})
	}
}

// A flag's value: the command line wins over the environment, env over
// envFrom, a later envFrom over an earlier one (the kubelet's order, then
// the binaries').
func TestSettingPrecedence(t *testing.T) {
	cm := func(name string, data map[string]string) Object {
		return Object{ID: "ConfigMap/ns/" + name, GVK: corev1.SchemeGroupVersion.WithKind("ConfigMap"),
			Obj: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Data: data}}
	}
	s := Set{cm("a", map[string]string{"SHUTDOWN_TIMEOUT": "1s", "LOG_LEVEL": "info"}), cm("b", map[string]string{"SHUTDOWN_TIMEOUT": "2s"})}
	c := &corev1.Container{EnvFrom: []corev1.EnvFromSource{
		{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "a"}}},
		{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "b"}}},
	}}
	v, known, found := s.Setting("ns", c, "shutdown-timeout")
	assert.Equal(t, []any{"2s", true, true}, []any{v, known, found}, "the later envFrom")

	c.Env = []corev1.EnvVar{{Name: "SHUTDOWN_TIMEOUT", Value: "3s"}, {Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "url"}}}}
	v, _, _ = s.Setting("ns", c, "shutdown-timeout")
	assert.Equal(t, "3s", v, "env over envFrom")

	c.Args = []string{"serve", "--shutdown-timeout", "4s"}
	v, _, _ = s.Setting("ns", c, "shutdown-timeout")
	assert.Equal(t, "4s", v, "the command line over the environment")
	c.Args = []string{"serve", "-shutdown-timeout=5s"}
	v, _, _ = s.Setting("ns", c, "shutdown-timeout")
	assert.Equal(t, "5s", v)

	_, known, found = s.Setting("ns", c, "database-url")
	assert.True(t, found)
	assert.False(t, known, "a Secret's value is not in the render")
	_, _, found = s.Setting("ns", c, "listen-addr")
	assert.False(t, found)
	assert.Equal(t, "serve", Command(c))
	assert.Equal(t, "serve", Command(&corev1.Container{}), "the image's default command")
	assert.Equal(t, "migrate", Command(&corev1.Container{Command: []string{"/oplog"}, Args: []string{"migrate"}}))
}

func TestReadFlags(t *testing.T) {
	dir := t.TempDir()
	src := `package x

import ("flag"; "time")

type cfg struct{ a string; d time.Duration; n int }

func (c *cfg) register(fs *flag.FlagSet) {
	fs.StringVar(&c.a, "listen-addr", ":1", "")
	fs.DurationVar(&c.d, "shutdown-timeout", 30*time.Second, "")
	fs.IntVar(&c.n, "db-max-conns", 16, "")
	fs.Var(nil, "rate-limit", "")
	_ = fs.Parse(nil)
}

func other(fs *flag.FlagSet) { fs.Bool("elsewhere", false, "") }

func dynamic(fs *flag.FlagSet, name string) { fs.String(name, "", "") }
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o644))

	f, err := ReadFlags(dir, []string{"a", "b"}, []FlagSource{
		{File: "x.go", Func: "(*cfg).register", Commands: []string{"serve"}},
		{File: "x.go", Func: "other", Services: []string{"b"}, Commands: []string{"serve", "migrate"}},
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"db-max-conns", "listen-addr", "rate-limit", "shutdown-timeout"}, f.Names("a", "serve"))
	assert.Equal(t, []string{"db-max-conns", "elsewhere", "listen-addr", "rate-limit", "shutdown-timeout"}, f.Names("b", "serve"))
	assert.Equal(t, []string{"elsewhere"}, f.Names("b", "migrate"))
	d, err := f["a"]["serve"]["shutdown-timeout"].DurationDefault()
	require.NoError(t, err)
	assert.Equal(t, 30*time.Second, d)
	n, err := f["a"]["serve"]["db-max-conns"].IntDefault()
	require.NoError(t, err)
	assert.Equal(t, 16, n)
	_, err = f["a"]["serve"]["listen-addr"].DurationDefault()
	assert.Error(t, err, "a string is no duration")

	// A source the reader cannot follow is an error, not an empty list.
	for _, bad := range []FlagSource{
		{File: "x.go", Func: "(*cfg).gone", Commands: []string{"serve"}},
		{File: "x.go", Func: "dynamic", Commands: []string{"serve"}},
		{File: "missing.go", Func: "other", Commands: []string{"serve"}},
	} {
		_, err := ReadFlags(dir, []string{"a"}, []FlagSource{bad})
		assert.Error(t, err, "%+v", bad)
	}
}
