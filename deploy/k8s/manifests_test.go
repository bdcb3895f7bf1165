package k8s_test

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/platforma/platforma/deploy/k8s/manifests"
)

// Every kustomization renders in-process, as `kubectl kustomize` would,
// and every object decodes strictly into its k8s.io/api type and passes
// the validation that needs no API server.
func TestEveryKustomizationRendersStrictly(t *testing.T) {
	dirs := kustomizations(t)
	// The stages of every environment and deploy/observability at least.
	require.GreaterOrEqual(t, len(dirs), 10, "found %v", dirs)
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			s := render(t, dir)
			require.NotEmpty(t, s)
			assert.NoError(t, manifests.Validate(s))
		})
	}
}

// The stages of an overlay are applied one after the other into one
// namespace: what two of them both render (the namespace, dev's Secrets
// and Postgres) must be identical, and each stage must carry what its
// pods need.
func TestStagesAgreeAndStandAlone(t *testing.T) {
	for _, e := range environments {
		t.Run(e.name, func(t *testing.T) {
			e.objects(t) // fails on a conflict
			for _, st := range e.stages {
				assert.NoError(t, manifests.CheckReferences(render(t, st), e.external), "stage %s", st)
			}
		})
	}
}

func TestPodSecurityAndResources(t *testing.T) {
	for _, e := range environments {
		t.Run(e.name, func(t *testing.T) {
			s := e.objects(t)
			assert.NoError(t, manifests.CheckPodSecurity(s))
			assert.NoError(t, manifests.CheckResources(s))
		})
	}
}

func TestServers(t *testing.T) {
	for _, e := range environments {
		t.Run(e.name, func(t *testing.T) {
			s := e.objects(t)
			assert.Len(t, serverDeployments(s), len(services))
			assert.NoError(t, manifests.CheckServers(s, manifests.ServerPolicy{Flags: flags(t)}))
		})
	}
}

// The shutdown timeout's default is read from the code, as the grace
// period check needs it when no SHUTDOWN_TIMEOUT is set.
func TestShutdownTimeoutDefaultIsReadFromTheCode(t *testing.T) {
	fl, ok := flags(t)["profile"]["serve"]["shutdown-timeout"]
	require.True(t, ok)
	d, err := fl.DurationDefault()
	require.NoError(t, err)
	assert.Equal(t, "30s", d.String(), "services/kit/app/config.go")
}

func TestEnvironmentVariablesAreFlags(t *testing.T) {
	f := flags(t)
	// The reader sees every command of every service.
	for _, svc := range services {
		for _, cmd := range []string{"serve", "migrate", "bootstrap"} {
			assert.Contains(t, f.Names(svc, cmd), "database-url", "%s %s", svc, cmd)
		}
	}
	assert.Contains(t, f.Names("oplog", "serve"), "profile-addr")
	assert.Contains(t, f.Names("oplog", "serve"), "lifecycle-store")
	assert.NotContains(t, f.Names("profile", "serve"), "profile-addr")
	assert.Contains(t, f.Names("profile", "bootstrap"), "owner-password-file")
	assert.NotContains(t, f.Names("profile", "migrate"), "owner-password-file")

	for _, e := range environments {
		t.Run(e.name, func(t *testing.T) {
			assert.NoError(t, manifests.CheckEnv(e.objects(t), f, allowedEnv))
		})
	}
}

func TestReferences(t *testing.T) {
	for _, e := range environments {
		t.Run(e.name, func(t *testing.T) {
			s := e.objects(t)
			require.NoError(t, manifests.CheckReferences(s, e.external))
			// The list of what is created out of band is exactly what the
			// render refers to and does not hold: no stale entries.
			if e.external != nil {
				used := map[string]bool{}
				for _, r := range s.Refs() {
					if _, ok := s.Find(r.Kind, r.Namespace, r.Name); !ok {
						used[r.ID()] = true
					}
				}
				for id := range e.external {
					assert.True(t, used[id], "%s is listed as created out of band but nothing refers to it", id)
				}
			}
		})
	}
}

// Production renders no credentials: every Secret is created out of band
// and only referenced, and no configuration value holds a password.
func TestProdRendersNoSecrets(t *testing.T) {
	for _, name := range []string{"base", "prod"} {
		t.Run(name, func(t *testing.T) {
			s := envNamed(t, name).objects(t)
			assert.Empty(t, manifests.Of[*corev1.Secret](s), "Secrets are created out of band")
			assert.Empty(t, secretsInConfigMaps(s))
		})
	}
}

// secretsInConfigMaps lists ConfigMap values that carry a password or a
// private key.
func secretsInConfigMaps(s manifests.Set) []string {
	var out []string
	for _, cm := range manifests.Of[*corev1.ConfigMap](s) {
		for k, v := range cm.Data {
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if _, ok := u.User.Password(); ok {
					out = append(out, cm.Name+" "+k)
				}
			}
			if strings.Contains(v, "PRIVATE KEY-----") {
				out = append(out, cm.Name+" "+k)
			}
		}
	}
	return out
}

func TestImages(t *testing.T) {
	for _, e := range environments[1:] { // base has no images transformer
		t.Run(e.name, func(t *testing.T) {
			mutable := []string{"latest"}
			if e.name == "prod" {
				mutable = append(mutable, "dev", "main", "master")
			}
			assert.NoError(t, manifests.CheckImages(e.objects(t), mutable))
		})
	}
}

// reservedConnections are Postgres's superuser_reserved_connections
// (3) and the bootstrap's admin connection.
const reservedConnections = 4

// prodMaxConnections is what the prod overlay assumes of the external
// Postgres (README.md, "Scaling"): raise the autoscalers' maxima or
// DB_MAX_CONNS only with it.
const prodMaxConnections = 300

func TestDatabaseConnectionsFit(t *testing.T) {
	dev := envNamed(t, "dev").objects(t)
	n, err := manifests.Connections(dev, flags(t))
	require.NoError(t, err)
	assert.LessOrEqual(t, n, devMaxConnections(t, dev)-reservedConnections)

	prod := envNamed(t, "prod").objects(t)
	n, err = manifests.Connections(prod, flags(t))
	require.NoError(t, err)
	assert.LessOrEqual(t, n, prodMaxConnections-reservedConnections)
	t.Logf("prod: at most %d connections of %d", n, prodMaxConnections)
}

// devMaxConnections reads -c max_connections from the dev Postgres's
// arguments.
func devMaxConnections(t *testing.T, s manifests.Set) int {
	t.Helper()
	o, ok := s.Find("StatefulSet", "platforma", "postgres")
	require.True(t, ok)
	args := o.Obj.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0].Args
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "max_connections="); ok && i > 0 && args[i-1] == "-c" {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no -c max_connections=N in %v", args)
	return 0
}

// OpLogService's relay reaches ProfileService at PROFILE_ADDR: a dns:///
// target naming ProfileService's headless Service, in its namespace, on its
// gRPC port, as every pod resolves it.
func TestRelayTargetIsProfileServiceHeadlessService(t *testing.T) {
	for _, e := range environments {
		t.Run(e.name, func(t *testing.T) {
			assert.NoError(t, relayTargetProblems(e.objects(t)))
		})
	}
}

func relayTargetProblems(s manifests.Set) error {
	oplog, ok := findServer(s, "oplog")
	if !ok {
		return fmt.Errorf("no oplog Deployment")
	}
	_, c := oplog.Platform()
	addr, known, found := s.Setting(oplog.Namespace, c, "profile-addr")
	if !found || !known {
		return fmt.Errorf("PROFILE_ADDR is not set in the render")
	}
	target, ok := strings.CutPrefix(addr, "dns:///")
	if !ok {
		return fmt.Errorf("PROFILE_ADDR=%s: want dns:///<service>.<namespace>.svc.cluster.local:<port>, so that every pod is resolved", addr)
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("PROFILE_ADDR=%s: %v", addr, err)
	}
	name, ns, ok := strings.Cut(strings.TrimSuffix(host, ".svc.cluster.local"), ".")
	if !ok || !strings.HasSuffix(host, ".svc.cluster.local") {
		return fmt.Errorf("PROFILE_ADDR=%s: the host must be a Service's full name", addr)
	}
	o, ok := s.Find("Service", ns, name)
	if !ok {
		return fmt.Errorf("PROFILE_ADDR=%s: no Service %s/%s", addr, ns, name)
	}
	svc := o.Obj.(*corev1.Service)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		return fmt.Errorf("PROFILE_ADDR=%s: Service %s is not headless", addr, name)
	}
	profile, ok := findServer(s, "profile")
	if !ok || !manifests.Selects(manifests.MapSelector(svc.Spec.Selector), profile.Template.Labels) {
		return fmt.Errorf("PROFILE_ADDR=%s: Service %s does not select ProfileService's pods", addr, name)
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) == port {
			return nil
		}
	}
	return fmt.Errorf("PROFILE_ADDR=%s: Service %s has no port %s", addr, name, port)
}

func serverDeployments(s manifests.Set) []manifests.Workload {
	var out []manifests.Workload
	for _, w := range s.Workloads() {
		if _, c := w.Platform(); c != nil && w.Kind == "Deployment" && manifests.Command(c) == "serve" {
			out = append(out, w)
		}
	}
	return out
}

func findServer(s manifests.Set, svc string) (manifests.Workload, bool) {
	for _, w := range serverDeployments(s) {
		if name, _ := w.Platform(); name == svc {
			return w, true
		}
	}
	return manifests.Workload{}, false
}

// Outsiders, as the NetworkPolicies' labels describe them (README.md,
// "Network policies").
var (
	worker = manifests.Endpoint{
		Name: "a worker", Namespace: "workers",
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "workers", "platforma.io/workers": "true"},
		PodLabels:       map[string]string{"platforma.io/role": "worker"},
	}
	unlabelledWorker = manifests.Endpoint{
		Name: "a worker in an unlabelled namespace", Namespace: "elsewhere",
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "elsewhere"},
		PodLabels:       map[string]string{"platforma.io/role": "worker"},
	}
	prometheus = manifests.Endpoint{
		Name: "Prometheus", Namespace: "monitoring",
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"},
		PodLabels:       map[string]string{"app.kubernetes.io/name": "prometheus"},
	}
	strangerInNamespace = manifests.Endpoint{
		Name: "an unrelated pod of the namespace", Namespace: "platforma",
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "platforma"},
		PodLabels:       map[string]string{"app.kubernetes.io/name": "debug"},
	}
	outsideAddress = manifests.Endpoint{Name: "an address outside the cluster", IP: net.ParseIP("203.0.113.7")}
	kubeDNS        = manifests.Endpoint{
		Name: "kube-dns", Namespace: "kube-system",
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"},
		PodLabels:       map[string]string{"k8s-app": "kube-dns"},
	}
)

func TestNetworkPolicies(t *testing.T) {
	for _, e := range environments {
		t.Run(e.name, func(t *testing.T) {
			s := e.objects(t)
			assert.NoError(t, networkProblems(s))
			if e.name == "dev" {
				assert.NoError(t, devPostgresProblems(s))
			}
			if e.name == "prod" {
				assert.NoError(t, prodEgressProblems(s))
			}
		})
	}
}

// networkProblems checks ingress to the servers: default deny, ProfileService's
// gRPC port open to OpLogService's pods only, OpLogService's and
// ReviewMetadataService's to workers, every metrics port to Prometheus and
// no gRPC port to it, and the plaintext health port to no pod at all (the
// kubelet probes it from the node, which policies do not filter).
func networkProblems(s manifests.Set) error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	for _, w := range s.Workloads() {
		if !s.Isolated(s.Pod(w), networkingv1.PolicyTypeIngress) {
			bad("%s is not selected by any ingress policy: everyone can reach it", w.ID())
		}
	}
	for _, svc := range services {
		w, ok := findServer(s, svc)
		if !ok {
			bad("no %s Deployment", svc)
			continue
		}
		_, c := w.Platform()
		dst := s.Pod(w)
		grpc, metrics, health := portNamed(c, "grpc"), portNamed(c, "metrics"), portNamed(c, manifests.HealthPortName)
		if health == 0 {
			bad("%s declares no %s port", svc, manifests.HealthPortName)
		}

		// Who among the rendered pods reaches the gRPC port.
		var in []string
		for _, o := range s.Workloads() {
			if s.Allows(s.Pod(o), dst, grpc, corev1.ProtocolTCP) {
				in = append(in, o.ID())
			}
		}
		wantWorkers := svc != "profile"
		if svc == "profile" {
			oplog, _ := findServer(s, "oplog")
			if len(in) != 1 || in[0] != oplog.ID() {
				bad("ProfileService's gRPC port admits %v, want only %s", in, oplog.ID())
			}
			for _, p := range s.IngressPeers(dst, grpc, corev1.ProtocolTCP) {
				if p.NamespaceSelector != nil || p.IPBlock != nil {
					bad("ProfileService's gRPC port admits a peer outside the namespace: %+v", p)
				}
			}
		} else if len(in) != 0 {
			bad("%s's gRPC port admits pods of the render %v: only workers call it", svc, in)
		}
		if got := s.Allows(worker, dst, grpc, corev1.ProtocolTCP); got != wantWorkers {
			bad("%s's gRPC port: a worker admitted = %v, want %v", svc, got, wantWorkers)
		}
		for _, out := range []manifests.Endpoint{unlabelledWorker, prometheus, strangerInNamespace, outsideAddress} {
			if s.Allows(out, dst, grpc, corev1.ProtocolTCP) {
				bad("%s's gRPC port admits %s", svc, out.Name)
			}
		}
		if !s.Allows(prometheus, dst, metrics, corev1.ProtocolTCP) {
			bad("Prometheus cannot scrape %s's metrics port", svc)
		}
		for _, out := range []manifests.Endpoint{worker, strangerInNamespace, outsideAddress} {
			if s.Allows(out, dst, metrics, corev1.ProtocolTCP) {
				bad("%s's metrics port admits %s", svc, out.Name)
			}
		}
		var healthIn []string
		for _, o := range s.Workloads() {
			if s.Allows(s.Pod(o), dst, health, corev1.ProtocolTCP) {
				healthIn = append(healthIn, o.ID())
			}
		}
		for _, out := range []manifests.Endpoint{worker, prometheus, strangerInNamespace, outsideAddress} {
			if s.Allows(out, dst, health, corev1.ProtocolTCP) {
				healthIn = append(healthIn, out.Name)
			}
		}
		if len(healthIn) > 0 {
			bad("%s's health port admits %v: it is plaintext and for the kubelet only", svc, healthIn)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// devPostgresProblems: the dev Postgres admits exactly the three servers
// and their bootstrap and migrate Jobs, and nothing from elsewhere.
func devPostgresProblems(s manifests.Set) error {
	var pg manifests.Workload
	for _, w := range s.Workloads() {
		if w.Kind == "StatefulSet" && w.Name == "postgres" {
			pg = w
		}
	}
	if pg.Template == nil {
		return fmt.Errorf("no postgres StatefulSet")
	}
	dst := s.Pod(pg)
	var want, got []string
	for _, w := range s.Workloads() {
		if svc, c := w.Platform(); c != nil && svc != "" {
			want = append(want, w.ID())
		}
		if s.Allows(s.Pod(w), dst, 5432, corev1.ProtocolTCP) && w.ID() != pg.ID() {
			got = append(got, w.ID())
		}
	}
	var errs []string
	if strings.Join(got, ",") != strings.Join(want, ",") {
		errs = append(errs, fmt.Sprintf("Postgres admits %v, want %v", got, want))
	}
	if jobs := len(manifests.Of[*batchv1.Job](s)); jobs != 2*len(services) {
		errs = append(errs, fmt.Sprintf("%d Jobs, want a bootstrap and a migrate per service", jobs))
	}
	for _, p := range s.IngressPeers(dst, 5432, corev1.ProtocolTCP) {
		if p.NamespaceSelector != nil || p.IPBlock != nil {
			errs = append(errs, fmt.Sprintf("Postgres admits a peer outside the namespace: %+v", p))
		}
	}
	for _, out := range []manifests.Endpoint{worker, prometheus, strangerInNamespace, outsideAddress} {
		if s.Allows(out, dst, 5432, corev1.ProtocolTCP) {
			errs = append(errs, "Postgres admits "+out.Name)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// prodEgressProblems: in production every pod that uses the database (the
// servers and their Jobs) may resolve names and reach the external Postgres
// (an ipBlock on 5432), and the relay ProfileService's gRPC port.
func prodEgressProblems(s manifests.Set) error {
	var pgAddrs []net.IP
	for _, np := range manifests.Of[*networkingv1.NetworkPolicy](s) {
		for _, r := range np.Spec.Egress {
			for _, port := range r.Ports {
				if port.Port == nil || port.Port.IntValue() != 5432 {
					continue
				}
				for _, peer := range r.To {
					if peer.IPBlock != nil {
						ip, _, err := net.ParseCIDR(peer.IPBlock.CIDR)
						if err == nil {
							pgAddrs = append(pgAddrs, ip)
						}
					}
				}
			}
		}
	}
	if len(pgAddrs) == 0 {
		return fmt.Errorf("no egress policy lets anything reach Postgres (an ipBlock on 5432)")
	}
	var errs []string
	for _, w := range s.Workloads() {
		src := s.Pod(w)
		if !s.Isolated(src, networkingv1.PolicyTypeEgress) {
			errs = append(errs, w.ID()+" has no egress policy")
			continue
		}
		for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
			if !s.Allows(src, kubeDNS, 53, proto) {
				errs = append(errs, fmt.Sprintf("%s cannot resolve names (DNS over %s)", w.ID(), proto))
			}
		}
		reaches := false
		for _, ip := range pgAddrs {
			reaches = reaches || s.Allows(src, manifests.Endpoint{Name: "Postgres", IP: ip}, 5432, corev1.ProtocolTCP)
		}
		if !reaches {
			errs = append(errs, w.ID()+" cannot reach Postgres")
		}
		if s.Allows(src, outsideAddress, 5432, corev1.ProtocolTCP) {
			errs = append(errs, w.ID()+" may reach any address on 5432")
		}
	}
	oplog, _ := findServer(s, "oplog")
	profile, _ := findServer(s, "profile")
	if !s.Allows(s.Pod(oplog), s.Pod(profile), 50051, corev1.ProtocolTCP) {
		errs = append(errs, "the login relay cannot reach ProfileService")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

func portNamed(c *corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// overlays/prod-gitops is the prod services and migrate Jobs in one render
// for Argo CD: the same objects as the two stages, nothing more or less.
func TestGitOpsRenderIsTheProdStages(t *testing.T) {
	want, err := manifests.Union(render(t, "overlays/prod/migrate"), render(t, "overlays/prod"))
	require.NoError(t, err)
	got, err := manifests.Union(render(t, "overlays/prod-gitops"))
	require.NoError(t, err)
	require.Equal(t, ids(want), ids(got))
	_, err = manifests.Union(want, got) // the same object under one id
	assert.NoError(t, err)
	for _, j := range manifests.Of[*batchv1.Job](got) {
		assert.Equal(t, "PreSync", j.Annotations["argocd.argoproj.io/hook"], j.Name)
	}
}

func ids(s manifests.Set) []string {
	var out []string
	for _, o := range s {
		out = append(out, o.ID)
	}
	return out
}
