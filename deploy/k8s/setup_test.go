package k8s_test

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/deploy/k8s/manifests"
)

// repoRoot is the repository, from this module's directory.
const repoRoot = "../.."

var services = []string{"profile", "reviewmeta", "oplog"}

// flagSources are the functions that register the binaries' flags, and
// which commands parse them (services/kit/app: every command parses the
// common flags, serve its own and the service's, bootstrap its role flags).
var flagSources = []manifests.FlagSource{
	{File: "services/kit/app/config.go", Func: "(*commonConfig).register", Commands: []string{"serve", "migrate", "bootstrap"}},
	{File: "services/kit/app/config.go", Func: "(*serveConfig).register", Commands: []string{"serve"}},
	{File: "services/kit/app/security.go", Func: "(*securityConfig).register", Commands: []string{"serve"}},
	{File: "services/kit/app/bootstrap.go", Func: "(*bootstrapConfig).register", Commands: []string{"bootstrap"}},
	{File: "services/profile/internal/profilesvc/profilesvc.go", Func: "(*Config).RegisterFlags", Services: []string{"profile"}, Commands: []string{"serve"}},
	{File: "services/oplog/internal/oplogsvc/config.go", Func: "(*Config).RegisterFlags", Services: []string{"oplog"}, Commands: []string{"serve"}},
	{File: "services/oplog/internal/oplogsvc/profiletls.go", Func: "(*ProfileTLS).registerFlags", Services: []string{"oplog"}, Commands: []string{"serve"}},
	{File: "services/oplog/internal/lifecycle/config.go", Func: "(*Config).RegisterFlags", Services: []string{"oplog"}, Commands: []string{"serve"}},
}

// allowedEnv are the variables a platform container may have that are no
// flag's, and who reads them.
var allowedEnv = map[string]string{
	"GOMEMLIMIT":            "the Go runtime's soft memory limit",
	"AWS_ACCESS_KEY_ID":     "the AWS SDK, for an s3:// LIFECYCLE_STORE (README, the data life cycle)",
	"AWS_SECRET_ACCESS_KEY": "the AWS SDK, for an s3:// LIFECYCLE_STORE",
	"AWS_SESSION_TOKEN":     "the AWS SDK, for an s3:// LIFECYCLE_STORE",
	"AWS_REGION":            "the AWS SDK, for an s3:// LIFECYCLE_STORE",
	// OpenTelemetry's standard environment (README "Traces").
	"OTEL_EXPORTER_OTLP_ENDPOINT":        "OpenTelemetry (README, Traces)",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "OpenTelemetry",
	"OTEL_EXPORTER_OTLP_PROTOCOL":        "OpenTelemetry",
	"OTEL_EXPORTER_OTLP_INSECURE":        "OpenTelemetry",
	"OTEL_SERVICE_NAME":                  "OpenTelemetry",
	"OTEL_RESOURCE_ATTRIBUTES":           "OpenTelemetry",
	"OTEL_TRACES_SAMPLER":                "OpenTelemetry",
	"OTEL_TRACES_SAMPLER_ARG":            "OpenTelemetry",
	"OTEL_SDK_DISABLED":                  "OpenTelemetry",
}

// outOfBand are the objects base and prod refer to but never render: they
// hold credentials, so they are created in the cluster by whoever owns
// them (README.md, "Secrets"). Every entry must be referenced.
var outOfBand = map[string]string{
	"Secret/platforma-db-admin":     "an administrator's DSN for the bootstrap Jobs; deleted once they ran",
	"Secret/profile-db":             "the DSNs and passwords of ProfileService's owner and runtime roles",
	"Secret/reviewmeta-db":          "the DSNs and passwords of ReviewMetadataService's owner and runtime roles",
	"Secret/oplog-db":               "the DSNs and passwords of OpLogService's owner and runtime roles",
	"Secret/profile-tls":            "ProfileService's server certificate and key, from the cluster's PKI (e.g. cert-manager)",
	"Secret/reviewmeta-tls":         "ReviewMetadataService's server certificate and key",
	"Secret/oplog-tls":              "OpLogService's server certificate and key",
	"Secret/platforma-client-ca":    "the CA of the workers' and the relay's client certificates",
	"Secret/oplog-relay-tls":        "the login relay's client certificate (spiffe://platforma/service/oplog) and ProfileService's CA",
	"Secret/platforma-jwks":         "the identity provider's key set verifying operators' tokens",
	"Secret/profile-page-tokens":    "ProfileService's page-token key ring",
	"Secret/reviewmeta-page-tokens": "ReviewMetadataService's page-token key ring",
	"Secret/oplog-page-tokens":      "OpLogService's page-token key ring",
	"Secret/oplog-cold-storage":     "optional S3 keys of the life cycle's exports (a pod identity may replace them)",
}

// environment is an overlay's stages, applied in this order into one
// namespace (README.md, "Apply order").
type environment struct {
	name   string
	stages []string
	// external: what its workloads may refer to without rendering it.
	external map[string]string
}

var environments = []environment{
	{name: "base", stages: []string{"base/bootstrap", "base/migrate", "base"}, external: without(outOfBand, "Secret/oplog-cold-storage")},
	{name: "dev", stages: []string{"overlays/dev/bootstrap", "overlays/dev/migrate", "overlays/dev"}},
	{name: "prod", stages: []string{"overlays/prod/bootstrap", "overlays/prod/migrate", "overlays/prod"}, external: outOfBand},
}

func without(m map[string]string, keys ...string) map[string]string {
	out := maps.Clone(m)
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

func envNamed(t *testing.T, name string) environment {
	t.Helper()
	for _, e := range environments {
		if e.name == name {
			return e
		}
	}
	t.Fatalf("no environment %s", name)
	return environment{}
}

var (
	rendersMu sync.Mutex
	renders   = map[string]func() (manifests.Set, error){}
)

// render renders and strictly decodes a kustomization once per test run.
func render(t testing.TB, dir string) manifests.Set {
	t.Helper()
	rendersMu.Lock()
	f, ok := renders[dir]
	if !ok {
		f = sync.OnceValues(func() (manifests.Set, error) {
			docs, err := manifests.Render(dir)
			if err != nil {
				return nil, err
			}
			return manifests.Decode(docs)
		})
		renders[dir] = f
	}
	rendersMu.Unlock()
	s, err := f()
	require.NoError(t, err, "render %s", dir)
	return s
}

// objects are every object of the environment's stages together.
func (e environment) objects(t testing.TB) manifests.Set {
	t.Helper()
	var sets []manifests.Set
	for _, st := range e.stages {
		sets = append(sets, render(t, st))
	}
	s, err := manifests.Union(sets...)
	require.NoError(t, err)
	return s
}

var readFlags = sync.OnceValues(func() (manifests.Flags, error) {
	return manifests.ReadFlags(repoRoot, services, flagSources)
})

func flags(t testing.TB) manifests.Flags {
	t.Helper()
	f, err := readFlags()
	require.NoError(t, err)
	return f
}

// kustomizations are every directory of this module and deploy/observability
// holding a kustomization (components are built as part of the overlays
// that use them), so that a new one cannot be left out of the checks.
func kustomizations(t *testing.T) []string {
	t.Helper()
	dirs := []string{"../observability"}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.IsDir() || d.Name() != "kustomization.yaml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "\nkind: Component") {
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(dirs)
	return dirs
}

// errorList splits a joined error into its messages, for assertions on one.
func errorList(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, errorList(e)...)
		}
		return out
	}
	return []string{err.Error()}
}
