package manifests

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The user and group of the images (distroless "nonroot").
const ImageUser = 65532

// CheckPodSecurity: every pod runs as the "restricted" Pod Security
// Standard requires and more: no service account token, non-root, no
// privilege escalation, no capabilities, RuntimeDefault seccomp, a
// read-only root file system, Secrets and ConfigMaps mounted read-only;
// the platform's containers as the images' user.
func CheckPodSecurity(s Set) error {
	var errs []error
	for _, w := range s.Workloads() {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s", w.ID(), fmt.Sprintf(format, args...)))
		}
		spec := &w.Template.Spec
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			bad("automountServiceAccountToken must be false: nothing here talks to the Kubernetes API")
		}
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			bad("must not share the host's network, PID or IPC namespace")
		}
		psc := spec.SecurityContext
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
		}
		readOnly := map[string]bool{} // volumes that must be mounted read-only
		for _, v := range spec.Volumes {
			if v.Secret != nil || v.ConfigMap != nil || v.Projected != nil || v.DownwardAPI != nil {
				readOnly[v.Name] = true
			}
			if v.HostPath != nil {
				bad("volume %s: no hostPath", v.Name)
			}
		}
		for i := range spec.Containers {
			c := &spec.Containers[i]
			csc := c.SecurityContext
			if csc == nil {
				bad("container %s has no securityContext", c.Name)
				continue
			}
			if !boolOr(csc.RunAsNonRoot, psc.RunAsNonRoot) {
				bad("container %s: runAsNonRoot must be true", c.Name)
			}
			if uid := int64Or(csc.RunAsUser, psc.RunAsUser); uid == nil || *uid == 0 {
				bad("container %s: runAsUser must be set and not 0", c.Name)
			}
			if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
				bad("container %s: allowPrivilegeEscalation must be false", c.Name)
			}
			if csc.Privileged != nil && *csc.Privileged {
				bad("container %s: must not be privileged", c.Name)
			}
			if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
				bad("container %s: readOnlyRootFilesystem must be true (writable directories are emptyDir volumes)", c.Name)
			}
			if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
				bad("container %s: capabilities must drop ALL and add none", c.Name)
			}
			seccomp := csc.SeccompProfile
			if seccomp == nil {
				seccomp = psc.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				bad("container %s: seccompProfile must be RuntimeDefault", c.Name)
			}
			if svc, pc := w.Platform(); pc == c {
				uid, gid := int64Or(csc.RunAsUser, psc.RunAsUser), int64Or(csc.RunAsGroup, psc.RunAsGroup)
				if uid == nil || *uid != ImageUser || gid == nil || *gid != ImageUser {
					bad("container %s: the platforma/%s image runs as %d:%d", c.Name, svc, ImageUser, ImageUser)
				}
			}
			for _, m := range c.VolumeMounts {
				if readOnly[m.Name] && !m.ReadOnly {
					bad("container %s: volume %s holds Secret or ConfigMap data and must be mounted readOnly", c.Name, m.Name)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func boolOr(a, b *bool) bool {
	if a != nil {
		return *a
	}
	return b != nil && *b
}

func int64Or(a, b *int64) *int64 {
	if a != nil {
		return a
	}
	return b
}

// CheckResources: every container of every pod requests and limits CPU
// and memory, so the scheduler places it, the autoscaler can compute a
// utilisation, and a leak ends in an OOM kill of that container only.
func CheckResources(s Set) error {
	var errs []error
	for _, w := range s.Workloads() {
		for i := range w.Template.Spec.Containers {
			c := &w.Template.Spec.Containers[i]
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[r]; !ok {
					errs = append(errs, fmt.Errorf("%s: no %s request", describe(w, c), r))
				}
				if _, ok := c.Resources.Limits[r]; !ok {
					errs = append(errs, fmt.Errorf("%s: no %s limit", describe(w, c), r))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Shutdown is what the servers do after SIGTERM (services/kit/server,
// Run and shutdown) besides the calls' and background tasks' shutdown
// timeout each: 5 s for handlers after the forced stop, 5 s for /metrics,
// 5 s to flush traces (services/kit/app serve).
const ShutdownOverhead = 15 * time.Second

// ServerPolicy is what CheckServers needs to know about the binaries.
type ServerPolicy struct {
	// Flags of the binaries (ReadFlags): the shutdown timeout's default.
	Flags Flags
}

// HealthPortName is the name of the container port on which the servers'
// plaintext health listener (-health-addr, HEALTH_ADDR) answers the
// kubelet's grpc probes.
const HealthPortName = "health"

// LivenessService is the health service name a liveness probe asks
// (services/kit/server.LivenessService): SERVING from the server's start
// until its shutdown, whatever the database does. Readiness asks "", the
// server's status, which follows the database.
const LivenessService = "liveness"

// CheckServers checks every Deployment that runs a platform `serve`:
//   - a readiness and a liveness probe, both grpc probes on the container
//     port named health, the plaintext health listener: kubelet's grpc
//     probes do not do TLS, so against the TLS grpc port they would always
//     fail; a tcpSocket or httpGet probe cannot tell a server whose
//     database is gone; no exec probe (the image has no shell or tools);
//   - the readiness probe asks health service "" (unset), which follows
//     the database and turns NOT_SERVING when shutdown starts; the liveness
//     probe asks LivenessService, so that a database outage makes replicas
//     unready but does not restart them;
//   - LISTEN_ADDR, METRICS_ADDR and HEALTH_ADDR set (on the command line,
//     in the environment or a ConfigMap of the render), on the ports named
//     grpc, metrics and health, and not on a loopback address (the
//     kubelet, Services and Prometheus reach the pod's IP); HEALTH_ADDR
//     has no default (the listener is off without it);
//   - terminationGracePeriodSeconds longer than the server can take to
//     stop: the preStop sleep, twice SHUTDOWN_TIMEOUT (from the args, the
//     environment or the flag's default) and ShutdownOverhead;
//   - no replicas field, one CPU-based HorizontalPodAutoscaler (autoscaling/v2)
//     targeting it;
//   - a PodDisruptionBudget that selects its pods and no other workload's;
//   - a headless Service exposing the grpc port; every Service that selects
//     its pods selects no other workload's, targets ports the container
//     declares and not the health port (plaintext, for the kubelet only).
func CheckServers(s Set, p ServerPolicy) error {
	var errs []error
	workloads := s.Workloads()
	for _, w := range workloads {
		d, ok := w.Obj.(*appsv1.Deployment)
		if !ok {
			continue
		}
		svc, c := w.Platform()
		if c == nil || Command(c) != "serve" {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s", w.ID(), fmt.Sprintf(format, args...)))
		}

		insecure, _, _ := s.Setting(w.Namespace, c, "insecure")
		plaintext := insecure == "true" || insecure == "1"
		grpcPort, _ := containerPort(c, intstr.FromString("grpc"))
		healthPort, hasHealth := containerPort(c, intstr.FromString(HealthPortName))
		for _, pr := range []struct {
			name    string
			probe   *corev1.Probe
			service string // the health service it must ask
			why     string
		}{
			{"readinessProbe", c.ReadinessProbe, "", `readiness is service "" (unset), the server's status: NOT_SERVING while the database does not answer and from the start of a shutdown`},
			{"livenessProbe", c.LivenessProbe, LivenessService, `service "" follows the database, so an outage would restart every replica, and any other name is unknown to the server (NOT_FOUND: always failing)`},
		} {
			if pr.probe == nil {
				bad("container %s has no %s", c.Name, pr.name)
				continue
			}
			h := pr.probe.ProbeHandler
			switch {
			case h.Exec != nil:
				bad("container %s: %s is an exec probe, but the image holds nothing but the binary", c.Name, pr.name)
				continue
			case h.TCPSocket != nil, h.HTTPGet != nil:
				kind := "tcpSocket"
				if h.HTTPGet != nil {
					kind = "httpGet"
				}
				bad("container %s: %s is a %s probe; it must be a grpc probe on the port named %s (HEALTH_ADDR): only gRPC health tells whether the server can serve (database, shutdown)", c.Name, pr.name, kind, HealthPortName)
				continue
			case h.GRPC == nil:
				bad("container %s: %s has no handler; it must be a grpc probe on the port named %s", c.Name, pr.name, HealthPortName)
				continue
			}
			port := h.GRPC.Port
			_, declared := containerPort(c, intstr.FromInt32(port))
			switch {
			case port == grpcPort && !plaintext:
				bad("container %s: %s is a grpc probe on the grpc port %d, but that port serves TLS only and kubelet's grpc probes do not do TLS: it would always fail; probe the port named %s", c.Name, pr.name, port, HealthPortName)
			case !declared:
				bad("container %s: %s probes port %d, which the container does not declare", c.Name, pr.name, port)
			case !hasHealth:
				// Reported with HEALTH_ADDR below.
			case port != healthPort:
				bad("container %s: %s probes port %d, not the port named %s (%d), where the plaintext health listener answers", c.Name, pr.name, port, HealthPortName, healthPort)
			}
			asked := ""
			if h.GRPC.Service != nil {
				asked = *h.GRPC.Service
			}
			if asked != pr.service {
				bad("container %s: %s asks health service %q, want %q: %s", c.Name, pr.name, asked, pr.service, pr.why)
			}
		}

		for _, a := range []struct{ flag, port string }{{"listen-addr", "grpc"}, {"metrics-addr", "metrics"}, {"health-addr", HealthPortName}} {
			v, known, found := s.Setting(w.Namespace, c, a.flag)
			if a.flag == "health-addr" && (!found || (known && v == "")) {
				bad("container %s: HEALTH_ADDR is not set: the health listener is off by default, and the grpc probes on the port named %s would always fail", c.Name, HealthPortName)
				continue
			}
			if !found || !known {
				bad("container %s: %s must be set in the render, so its port can be checked against the container's", c.Name, EnvName(a.flag))
				continue
			}
			host, portStr, err := net.SplitHostPort(v)
			n, perr := strconv.Atoi(portStr)
			if err != nil || perr != nil {
				bad("container %s: %s=%q is not host:port", c.Name, EnvName(a.flag), v)
				continue
			}
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				bad("container %s: %s=%s listens on loopback, but the kubelet, Services and Prometheus reach the pod's IP", c.Name, EnvName(a.flag), v)
			}
			got, ok := containerPort(c, intstr.FromString(a.port))
			switch {
			case !ok:
				bad("container %s: %s=%s but the container declares no port named %s", c.Name, EnvName(a.flag), v, a.port)
			case got != int32(n):
				bad("container %s: %s=%s but the container port named %s is %d", c.Name, EnvName(a.flag), v, a.port, got)
			}
		}

		timeout, err := shutdownTimeout(s, w, c, svc, p.Flags)
		if err != nil {
			bad("%v", err)
		} else {
			var sleep time.Duration
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
				sleep = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			}
			need := sleep + 2*timeout + ShutdownOverhead
			grace := 30 * time.Second // the API's default
			if g := w.Template.Spec.TerminationGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			if grace <= need {
				bad("terminationGracePeriodSeconds is %s, but the server may take %s to stop (preStop sleep %s + 2 × SHUTDOWN_TIMEOUT %s + %s): it would be killed while draining", grace, need, sleep, timeout, ShutdownOverhead)
			}
		}

		var hpas []*autoscalingv2.HorizontalPodAutoscaler
		for _, h := range Of[*autoscalingv2.HorizontalPodAutoscaler](s) {
			r := h.Spec.ScaleTargetRef
			if h.Namespace == w.Namespace && r.Kind == "Deployment" && r.APIVersion == "apps/v1" && r.Name == w.Name {
				hpas = append(hpas, h)
			}
		}
		switch {
		case len(hpas) != 1:
			bad("%d HorizontalPodAutoscalers target it, want 1", len(hpas))
		case !cpuBased(hpas[0]):
			bad("HorizontalPodAutoscaler %s does not scale on CPU utilisation", hpas[0].Name)
		case hpas[0].Spec.MinReplicas == nil:
			bad("HorizontalPodAutoscaler %s has no minReplicas", hpas[0].Name)
		}
		if d.Spec.Replicas != nil {
			bad("has replicas: %d; the HorizontalPodAutoscaler owns the count, and every apply would reset it", *d.Spec.Replicas)
		}

		pdbs := 0
		for _, pdb := range Of[*policyv1.PodDisruptionBudget](s) {
			if pdb.Namespace != w.Namespace || !Selects(pdb.Spec.Selector, w.Template.Labels) {
				continue
			}
			pdbs++
			if other := selectsOther(workloads, w, pdb.Namespace, pdb.Spec.Selector); other != "" {
				bad("PodDisruptionBudget %s also selects the pods of %s", pdb.Name, other)
			}
		}
		if pdbs == 0 {
			bad("no PodDisruptionBudget selects its pods")
		}

		headlessGRPC := false
		for _, service := range Of[*corev1.Service](s) {
			sel := MapSelector(service.Spec.Selector)
			if service.Namespace != w.Namespace || len(service.Spec.Selector) == 0 || !Selects(sel, w.Template.Labels) {
				continue
			}
			if other := selectsOther(workloads, w, service.Namespace, sel); other != "" {
				bad("Service %s also selects the pods of %s", service.Name, other)
			}
			for _, port := range service.Spec.Ports {
				target := port.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(port.Port)
				}
				n, ok := containerPort(c, target)
				if !ok {
					bad("Service %s port %s targets %s, which the container does not declare", service.Name, port.Name, target.String())
					continue
				}
				if service.Spec.ClusterIP == corev1.ClusterIPNone && n == mustPort(c, "grpc") {
					headlessGRPC = true
				}
				if hasHealth && n == healthPort {
					bad("Service %s port %s exposes the health port %d: it is plaintext and for the kubelet's probes only", service.Name, port.Name, n)
				}
			}
		}
		if !headlessGRPC {
			bad("no headless Service (clusterIP: None) exposes its grpc port: clients resolve every pod and spread their calls")
		}
	}
	return errors.Join(errs...)
}

func cpuBased(h *autoscalingv2.HorizontalPodAutoscaler) bool {
	for _, m := range h.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU &&
			m.Resource.Target.Type == autoscalingv2.UtilizationMetricType && m.Resource.Target.AverageUtilization != nil {
			return true
		}
	}
	return false
}

// shutdownTimeout is the -shutdown-timeout the container runs with.
func shutdownTimeout(s Set, w Workload, c *corev1.Container, svc string, flags Flags) (time.Duration, error) {
	v, known, found := s.Setting(w.Namespace, c, "shutdown-timeout")
	if found {
		if !known {
			return 0, fmt.Errorf("container %s: SHUTDOWN_TIMEOUT comes from outside the render; the grace period cannot be checked", c.Name)
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("container %s: SHUTDOWN_TIMEOUT=%q: %v", c.Name, v, err)
		}
		return d, nil
	}
	fl, ok := flags[svc]["serve"]["shutdown-timeout"]
	if !ok {
		return 0, fmt.Errorf("%s serve has no -shutdown-timeout flag (ReadFlags)", svc)
	}
	return fl.DurationDefault()
}

// containerPort resolves a port by name or number among the container's.
func containerPort(c *corev1.Container, port intstr.IntOrString) (int32, bool) {
	for _, p := range c.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func mustPort(c *corev1.Container, name string) int32 {
	n, _ := containerPort(c, intstr.FromString(name))
	return n
}

// selectsOther names another workload in namespace whose pods sel
// selects ("" when none does): a Job's pods behind a Service would get
// calls, two budgets over one pod make evictions fail.
func selectsOther(workloads []Workload, self Workload, namespace string, sel *metav1.LabelSelector) string {
	for _, o := range workloads {
		if o.ID() != self.ID() && o.Namespace == namespace && Selects(sel, o.Template.Labels) {
			return o.ID()
		}
	}
	return ""
}

// MapSelector is a Service's selector as a label selector.
func MapSelector(m map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: m}
}

// CheckEnv checks the environment of every platform container against the
// flags of the command it runs (ReadFlags): a variable that is no flag's,
// a misspelt SHUTDOWN_TIMOUT say, is silently ignored by the binary, so it
// must be a flag's or in allowed (name → why the process reads it). envFrom
// takes only ConfigMaps of the render, whose keys can be checked. Anything
// holding a password (a URL with one) must come from a Secret, and so must
// the database URLs.
func CheckEnv(s Set, flags Flags, allowed map[string]string) error {
	var errs []error
	for _, w := range s.Workloads() {
		svc, c := w.Platform()
		if c == nil {
			continue
		}
		cmd := Command(c)
		known := flags[svc][cmd]
		if known == nil {
			errs = append(errs, fmt.Errorf("%s: no flags known for `%s %s`", describe(w, c), svc, cmd))
			continue
		}
		envs := map[string]bool{}
		for name := range known {
			envs[EnvName(name)] = true
		}
		vars, opaque := s.Env(w.Namespace, c)
		for _, o := range opaque {
			errs = append(errs, fmt.Errorf("%s: envFrom %s is not in the render, so its variables cannot be checked", describe(w, c), o))
		}
		for _, v := range sortedVars(vars) {
			if _, ok := allowed[v.Name]; !ok && !envs[v.Name] {
				errs = append(errs, fmt.Errorf("%s: %s (from %s) is no flag of `%s %s` and not an allowed variable: the binary would ignore it", describe(w, c), v.Name, v.Source, svc, cmd))
			}
			if u, err := url.Parse(v.Value); v.Known && err == nil && u.User != nil {
				if _, ok := u.User.Password(); ok {
					errs = append(errs, fmt.Errorf("%s: %s (from %s) holds a password: take it from a Secret", describe(w, c), v.Name, v.Source))
				}
			}
		}
		for _, name := range []string{"DATABASE_URL", "LIFECYCLE_DATABASE_URL"} {
			if v, ok := vars[name]; ok && v.Secret == "" {
				errs = append(errs, fmt.Errorf("%s: %s must come from a Secret, not %s", describe(w, c), name, v.Source))
			}
		}
		for _, a := range append(append([]string{}, c.Command...), c.Args...) {
			if len(a) < 2 || a[0] != '-' {
				continue
			}
			name, _, _ := cutFlag(a)
			if _, ok := known[name]; !ok {
				errs = append(errs, fmt.Errorf("%s: argument %s is no flag of `%s %s`", describe(w, c), a, svc, cmd))
			}
		}
	}
	return errors.Join(errs...)
}

func cutFlag(a string) (name, value string, hasValue bool) {
	for len(a) > 0 && a[0] == '-' {
		a = a[1:]
	}
	for i := range len(a) {
		if a[i] == '=' {
			return a[:i], a[i+1:], true
		}
	}
	return a, "", false
}

func sortedVars(vars map[string]EnvVar) []EnvVar {
	out := make([]EnvVar, 0, len(vars))
	for _, v := range vars {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b EnvVar) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Ref is a workload's reference to a ConfigMap, Secret or ServiceAccount.
type Ref struct {
	Kind, Namespace, Name string
	// Key is the key read, "" for the whole object.
	Key      string
	Optional bool
	From     string
}

// ID is Kind/name, the form of CheckReferences' external list.
func (r Ref) ID() string { return r.Kind + "/" + r.Name }

// Refs are every reference of every workload.
func (s Set) Refs() []Ref {
	var refs []Ref
	for _, w := range s.Workloads() {
		add := func(kind, name, key string, optional *bool, from string) {
			refs = append(refs, Ref{Kind: kind, Namespace: w.Namespace, Name: name, Key: key, Optional: optional != nil && *optional, From: w.ID() + " " + from})
		}
		spec := &w.Template.Spec
		if sa := spec.ServiceAccountName; sa != "" && sa != "default" {
			add("ServiceAccount", sa, "", nil, "serviceAccountName")
		}
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			for _, f := range c.EnvFrom {
				if f.ConfigMapRef != nil {
					add("ConfigMap", f.ConfigMapRef.Name, "", f.ConfigMapRef.Optional, "envFrom")
				}
				if f.SecretRef != nil {
					add("Secret", f.SecretRef.Name, "", f.SecretRef.Optional, "envFrom")
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					add("ConfigMap", r.Name, r.Key, r.Optional, "env "+e.Name)
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					add("Secret", r.Name, r.Key, r.Optional, "env "+e.Name)
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				add("Secret", v.Secret.SecretName, "", v.Secret.Optional, "volume "+v.Name)
				for _, it := range v.Secret.Items {
					add("Secret", v.Secret.SecretName, it.Key, v.Secret.Optional, "volume "+v.Name)
				}
			}
			if v.ConfigMap != nil {
				add("ConfigMap", v.ConfigMap.Name, "", v.ConfigMap.Optional, "volume "+v.Name)
				for _, it := range v.ConfigMap.Items {
					add("ConfigMap", v.ConfigMap.Name, it.Key, v.ConfigMap.Optional, "volume "+v.Name)
				}
			}
			if v.Projected != nil {
				for _, src := range v.Projected.Sources {
					if src.Secret != nil {
						add("Secret", src.Secret.Name, "", src.Secret.Optional, "volume "+v.Name)
					}
					if src.ConfigMap != nil {
						add("ConfigMap", src.ConfigMap.Name, "", src.ConfigMap.Optional, "volume "+v.Name)
					}
				}
			}
		}
	}
	return refs
}

// CheckReferences: every ConfigMap, Secret and ServiceAccount a workload
// refers to is in the render, with the key it reads, or is listed in
// external (Kind/name → who creates it and why it is not rendered), or
// the reference is optional. A pod whose Secret is missing never starts.
func CheckReferences(s Set, external map[string]string) error {
	var errs []error
	for _, r := range s.Refs() {
		o, ok := s.Find(r.Kind, r.Namespace, r.Name)
		switch {
		case ok && r.Key != "" && !hasKey(o, r.Key):
			errs = append(errs, fmt.Errorf("%s: %s %s has no key %s", r.From, r.Kind, r.Name, r.Key))
		case ok, r.Optional:
		default:
			if _, ext := external[r.ID()]; !ext {
				errs = append(errs, fmt.Errorf("%s: %s %s is neither in the render nor listed as created out of band", r.From, r.Kind, r.Name))
			}
		}
	}
	return errors.Join(errs...)
}

func hasKey(o Object, key string) bool {
	switch t := o.Obj.(type) {
	case *corev1.ConfigMap:
		_, a := t.Data[key]
		_, b := t.BinaryData[key]
		return a || b
	case *corev1.Secret:
		_, a := t.Data[key]
		_, b := t.StringData[key]
		return a || b
	}
	return false
}

// CheckImages: every image has a tag, none of the mutable ones, and each
// platform image is the same in every workload, so that the Jobs migrate
// the schema the services' code expects.
func CheckImages(s Set, mutable []string) error {
	var errs []error
	byRepo := map[string]map[string]bool{}
	for _, w := range s.Workloads() {
		for _, c := range append(append([]corev1.Container{}, w.Template.Spec.InitContainers...), w.Template.Spec.Containers...) {
			tag := ImageTag(c.Image)
			if tag == "" || slices.Contains(mutable, tag) {
				errs = append(errs, fmt.Errorf("%s container %s: image %s is not pinned to a release tag", w.ID(), c.Name, c.Image))
			}
			repo := ImageRepo(c.Image)
			if byRepo[repo] == nil {
				byRepo[repo] = map[string]bool{}
			}
			byRepo[repo][c.Image] = true
		}
	}
	for repo, images := range byRepo {
		if len(images) > 1 {
			errs = append(errs, fmt.Errorf("%s runs as %d different images %v: every stage must run one release", repo, len(images), slices.Sorted(maps.Keys(images))))
		}
	}
	return errors.Join(errs...)
}

// JobConnections is what one bootstrap or migrate Job holds at most: the
// schema check's connection, goose's lock session and its pool.
const JobConnections = 3

// Connections is the most database connections the workloads can hold at
// once: for every platform server, its HorizontalPodAutoscaler's maximum
// plus its rollout surge, times DB_MAX_CONNS (plus one for the life
// cycle's connection where it runs), plus JobConnections per Job. It must
// stay below the server's max_connections.
func Connections(s Set, flags Flags) (int, error) {
	total := 0
	var errs []error
	for _, w := range s.Workloads() {
		svc, c := w.Platform()
		if c == nil {
			continue
		}
		if _, ok := w.Obj.(*batchv1.Job); ok {
			total += JobConnections
			continue
		}
		d, ok := w.Obj.(*appsv1.Deployment)
		if !ok || Command(c) != "serve" {
			continue
		}
		replicas := 1
		if d.Spec.Replicas != nil {
			replicas = int(*d.Spec.Replicas)
		}
		for _, h := range Of[*autoscalingv2.HorizontalPodAutoscaler](s) {
			if h.Namespace == w.Namespace && h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == w.Name {
				replicas = int(h.Spec.MaxReplicas)
			}
		}
		surge := 1 // the API's default is 25 %, rounded up
		if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
			n, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, replicas, true)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: maxSurge: %v", w.ID(), err))
			}
			surge = n
		}
		per := 0
		if v, known, found := s.Setting(w.Namespace, c, "db-max-conns"); found && known {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: DB_MAX_CONNS=%q", w.ID(), v))
			}
			per = n
		} else {
			n, err := flags[svc]["serve"]["db-max-conns"].IntDefault()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", w.ID(), err))
			}
			per = n
		}
		if _, _, found := s.Setting(w.Namespace, c, "lifecycle-database-url"); found {
			per++
		}
		total += (replicas + surge) * per
	}
	return total, errors.Join(errs...)
}
