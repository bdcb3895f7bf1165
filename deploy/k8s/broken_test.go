package k8s_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/platforma/platforma/deploy/k8s/manifests"
)

// Broken manifests fail to render or to decode: the checks of
// TestEveryKustomizationRendersStrictly can fail.
func TestBrokenFixturesFailToDecode(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want string
	}{
		{"testdata/misspelled-field", `unknown field "spec.template.spec.containers[0].livenesProbe"`},
		{"testdata/duplicate-field", `mapping key "image" already defined`},
		{"testdata/unknown-kind", `no kind "Certificate" is registered`},
		{"testdata/wrong-type", `cannot unmarshal string into Go struct field ServicePort.spec.ports.port of type int32`},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			docs, err := manifests.Render(tc.dir)
			if err == nil {
				_, err = manifests.Decode(docs)
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// The decoder itself refuses duplicate fields and kinds the checks do not
// know, whatever the renderer lets through.
func TestDecoderIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"duplicate field", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n", `"name" already set`},
		{"known to k8s.io/api but not to the checks", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n", "not a kind these checks know"},
		{"unknown field at the top", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndatas:\n  x: y\n", `unknown field "datas"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manifests.Decode([]manifests.Doc{{ID: "test", YAML: []byte(tc.yaml)}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// Each policy catches the breakage it exists for: every case breaks one
// thing in a copy of a real render and expects its check to say so. A
// case that breaks nothing the check sees fails.
func TestPoliciesCatchBrokenManifests(t *testing.T) {
	type check func(s manifests.Set) error
	servers := func(s manifests.Set) error {
		return manifests.CheckServers(s, manifests.ServerPolicy{Flags: flags(t)})
	}
	security := manifests.CheckPodSecurity
	resources := manifests.CheckResources
	envCheck := func(s manifests.Set) error { return manifests.CheckEnv(s, flags(t), allowedEnv) }
	refs := func(external map[string]string) check {
		return func(s manifests.Set) error { return manifests.CheckReferences(s, external) }
	}
	images := func(s manifests.Set) error { return manifests.CheckImages(s, []string{"latest", "dev"}) }

	for _, tc := range []struct {
		name   string
		env    string
		break_ func(t *testing.T, s manifests.Set) manifests.Set
		check  check
		want   string
	}{
		{"no readiness probe", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "profile").ReadinessProbe = nil
			return s
		}, servers, "has no readinessProbe"},
		{"no probes at all", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "oplog")
			c.ReadinessProbe, c.LivenessProbe = nil, nil
			return s
		}, servers, "has no livenessProbe"},
		{"a grpc probe against the TLS port", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "profile").LivenessProbe.GRPC.Port = 50051
			return s
		}, servers, "kubelet's grpc probes do not do TLS"},
		{"a grpc probe on the grpc port of a plaintext server", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "profile")
			c.Env = append(c.Env, corev1.EnvVar{Name: "INSECURE", Value: "true"})
			c.ReadinessProbe.GRPC.Port = 50051
			return s
		}, servers, "readinessProbe probes port 50051, not the port named health (9460)"},
		{"a probe on a port the container does not declare", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "reviewmeta").ReadinessProbe.GRPC.Port = 9999
			return s
		}, servers, "probes port 9999, which the container does not declare"},
		{"a tcpSocket probe", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "oplog").ReadinessProbe.ProbeHandler = corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("grpc")}}
			return s
		}, servers, "readinessProbe is a tcpSocket probe; it must be a grpc probe on the port named health"},
		{"an httpGet probe", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "oplog").LivenessProbe.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/metrics", Port: intstr.FromString("metrics")}}
			return s
		}, servers, "livenessProbe is a httpGet probe; it must be a grpc probe"},
		{"probes on another declared port than health", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "reviewmeta")
			c.ReadinessProbe.GRPC.Port, c.LivenessProbe.GRPC.Port = 9452, 9452
			return s
		}, servers, "livenessProbe probes port 9452, not the port named health (9460)"},
		{"no port named health", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "profile")
			for i := range c.Ports {
				if c.Ports[i].Name == "health" {
					c.Ports[i].Name = "probes"
				}
			}
			return s
		}, servers, "the container declares no port named health"},
		{"a readiness probe on the liveness service", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "profile").ReadinessProbe.GRPC.Service = ptr("liveness")
			return s
		}, servers, `readinessProbe asks health service "liveness", want ""`},
		{"a liveness probe on the server's status", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "oplog").LivenessProbe.GRPC.Service = nil
			return s
		}, servers, `livenessProbe asks health service "", want "liveness": service "" follows the database`},
		{"a liveness probe on a misspelt service", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "reviewmeta").LivenessProbe.GRPC.Service = ptr("Liveness")
			return s
		}, servers, `livenessProbe asks health service "Liveness", want "liveness"`},
		{"no HEALTH_ADDR", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			delete(configMapOf(t, s, "oplog", "oplog-config").Data, "HEALTH_ADDR")
			return s
		}, servers, "HEALTH_ADDR is not set: the health listener is off by default"},
		{"HEALTH_ADDR emptied in the environment", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "profile")
			c.Env = append(c.Env, corev1.EnvVar{Name: "HEALTH_ADDR", Value: ""})
			return s
		}, servers, "HEALTH_ADDR is not set"},
		{"HEALTH_ADDR on another port than the container's", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			configMapOf(t, s, "reviewmeta", "reviewmeta-config").Data["HEALTH_ADDR"] = ":9461"
			return s
		}, servers, "HEALTH_ADDR=:9461 but the container port named health is 9460"},
		{"HEALTH_ADDR on loopback", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "oplog")
			c.Args = append(c.Args, "-health-addr=127.0.0.1:9460")
			return s
		}, servers, "HEALTH_ADDR=127.0.0.1:9460 listens on loopback"},
		{"the health port on a Service", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			svc := find[*corev1.Service](t, s, "Service", "profile")
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "health", Port: 9460, TargetPort: intstr.FromString("health")})
			return s
		}, servers, "Service profile port health exposes the health port 9460"},
		{"an exec probe", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "reviewmeta").LivenessProbe.ProbeHandler = corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/grpc_health_probe"}}}
			return s
		}, servers, "exec probe"},
		{"a grace period shorter than the drain", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			deployment(t, s, "oplog").Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64(60))
			return s
		}, servers, "would be killed while draining"},
		{"a longer SHUTDOWN_TIMEOUT without a longer grace period", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "profile")
			c.Env = append(c.Env, corev1.EnvVar{Name: "SHUTDOWN_TIMEOUT", Value: "60s"})
			return s
		}, servers, "2 × SHUTDOWN_TIMEOUT 1m0s"},
		{"the default grace period", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			deployment(t, s, "profile").Spec.Template.Spec.TerminationGracePeriodSeconds = nil
			return s
		}, servers, "terminationGracePeriodSeconds is 30s"},
		{"LISTEN_ADDR on another port than the container's", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "profile")
			c.Env = append(c.Env, corev1.EnvVar{Name: "LISTEN_ADDR", Value: ":6000"})
			return s
		}, servers, "LISTEN_ADDR=:6000 but the container port named grpc is 50051"},
		{"no autoscaler", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			return remove(s, "HorizontalPodAutoscaler", "reviewmeta")
		}, servers, "0 HorizontalPodAutoscalers target it"},
		{"an autoscaler on memory", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			h := find[*autoscalingv2.HorizontalPodAutoscaler](t, s, "HorizontalPodAutoscaler", "oplog")
			h.Spec.Metrics[0].Resource.Name = corev1.ResourceMemory
			return s
		}, servers, "does not scale on CPU"},
		{"replicas beside an autoscaler", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			deployment(t, s, "oplog").Spec.Replicas = ptr(int32(1))
			return s
		}, servers, "the HorizontalPodAutoscaler owns the count"},
		{"no disruption budget", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			return remove(s, "PodDisruptionBudget", "profile")
		}, servers, "no PodDisruptionBudget selects its pods"},
		{"a disruption budget over the Jobs' pods too", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			p := find[*policyv1.PodDisruptionBudget](t, s, "PodDisruptionBudget", "profile")
			delete(p.Spec.Selector.MatchLabels, "app.kubernetes.io/component")
			return s
		}, servers, "also selects the pods of Job/platforma/profile-"},
		{"a Service that sends calls to the migrate Job", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			svc := find[*corev1.Service](t, s, "Service", "oplog")
			delete(svc.Spec.Selector, "app.kubernetes.io/component")
			return s
		}, servers, "Service oplog also selects the pods of Job/platforma/oplog-"},
		{"a Service port to nowhere", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			find[*corev1.Service](t, s, "Service", "profile-metrics").Spec.Ports[0].TargetPort = intstr.FromInt32(9999)
			return s
		}, servers, "targets 9999, which the container does not declare"},
		{"a ClusterIP Service instead of a headless one", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			find[*corev1.Service](t, s, "Service", "reviewmeta").Spec.ClusterIP = ""
			return s
		}, servers, "no headless Service"},
		{"no memory limit", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			delete(container(t, s, "oplog").Resources.Limits, corev1.ResourceMemory)
			return s
		}, resources, "no memory limit"},
		{"no CPU request on a Job", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			j := find[*batchv1.Job](t, s, "Job", "profile-migrate")
			delete(j.Spec.Template.Spec.Containers[0].Resources.Requests, corev1.ResourceCPU)
			return s
		}, resources, "Job/platforma/profile-migrate container migrate: no cpu request"},
		{"root", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "profile").SecurityContext.RunAsUser = ptr(int64(0))
			return s
		}, security, "runAsUser must be set and not 0"},
		{"a writable root file system", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "oplog").SecurityContext.ReadOnlyRootFilesystem = ptr(false)
			return s
		}, security, "readOnlyRootFilesystem must be true"},
		{"capabilities kept", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "oplog").SecurityContext.Capabilities.Drop = nil
			return s
		}, security, "capabilities must drop ALL"},
		{"privilege escalation", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			j := find[*batchv1.Job](t, s, "Job", "oplog-bootstrap")
			j.Spec.Template.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
			return s
		}, security, "allowPrivilegeEscalation must be false"},
		{"no seccomp profile", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			sts := find[*appsv1.StatefulSet](t, s, "StatefulSet", "postgres")
			sts.Spec.Template.Spec.SecurityContext.SeccompProfile = nil
			sts.Spec.Template.Spec.Containers[0].SecurityContext.SeccompProfile = nil
			return s
		}, security, "seccompProfile must be RuntimeDefault"},
		{"another user than the image's", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "reviewmeta").SecurityContext.RunAsUser = ptr(int64(1000))
			return s
		}, security, "runs as 65532:65532"},
		{"a Secret mounted writable", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "profile").VolumeMounts[0].ReadOnly = false
			return s
		}, security, "must be mounted readOnly"},
		{"a service account token", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			deployment(t, s, "profile").Spec.Template.Spec.AutomountServiceAccountToken = nil
			return s
		}, security, "automountServiceAccountToken must be false"},
		{"a misspelt variable in a ConfigMap", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			configMapOf(t, s, "oplog", "platforma-common").Data["SHUTDOWN_TIMOUT"] = "10s"
			return s
		}, envCheck, "SHUTDOWN_TIMOUT"},
		{"a flag of another command", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			j := find[*batchv1.Job](t, s, "Job", "profile-migrate")
			c := &j.Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, corev1.EnvVar{Name: "OWNER_PASSWORD_FILE", Value: "/x"})
			return s
		}, envCheck, "OWNER_PASSWORD_FILE (from value) is no flag of `profile migrate`"},
		{"a flag of another service", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			configMapOf(t, s, "profile", "profile-config").Data["PROFILE_ADDR"] = "dns:///x:1"
			return s
		}, envCheck, "PROFILE_ADDR (from configMap profile-config"},
		{"an unknown flag on the command line", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "reviewmeta")
			c.Args = append(c.Args, "-shutdown-timeout=10s", "-grace=5s")
			return s
		}, envCheck, "argument -grace=5s is no flag"},
		{"a password in plain configuration", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			c := container(t, s, "profile")
			for i := range c.Env {
				if c.Env[i].Name == "DATABASE_URL" {
					c.Env[i] = corev1.EnvVar{Name: "DATABASE_URL", Value: "postgres://profile:hunter2@db:5432/platforma"}
				}
			}
			return s
		}, envCheck, "DATABASE_URL (from value) holds a password"},
		{"a Secret nobody creates", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			for _, v := range deployment(t, s, "oplog").Spec.Template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == "oplog-relay-tls" {
					v.Secret.SecretName = "oplog-relay-tsl"
				}
			}
			return s
		}, refs(outOfBand), "Secret oplog-relay-tsl is neither in the render nor listed"},
		{"a key the generated Secret lacks", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			j := find[*batchv1.Job](t, s, "Job", "reviewmeta-bootstrap")
			j.Spec.Template.Spec.Volumes[0].Secret.Items[0].Key = "owner-pasword"
			return s
		}, refs(nil), "has no key owner-pasword"},
		{"a service account the stage does not create", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			find[*batchv1.Job](t, s, "Job", "oplog-migrate").Spec.Template.Spec.ServiceAccountName = "oplog"
			return remove(s, "ServiceAccount", "oplog")
		}, refs(outOfBand), "ServiceAccount oplog is neither in the render"},
		{"a Job migrating with another release", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			find[*batchv1.Job](t, s, "Job", "oplog-migrate").Spec.Template.Spec.Containers[0].Image = "platforma/oplog:0.9.0"
			return s
		}, images, "platforma/oplog runs as 2 different images"},
		{"a mutable tag", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			container(t, s, "profile").Image = "platforma/profile:latest"
			return s
		}, images, "not pinned"},
		{"a Secret with values in prod", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			return append(s, manifests.Object{ID: "Secret/platforma/profile-db", GVK: corev1.SchemeGroupVersion.WithKind("Secret"),
				Obj: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "profile-db", Namespace: "platforma"}, Data: map[string][]byte{"runtime-url": []byte("x")}}})
		}, prodSecretProblems, "Secret platforma/profile-db is rendered"},
		{"a DSN in a ConfigMap", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			configMapOf(t, s, "oplog", "oplog-config").Data["LIFECYCLE_DATABASE_URL"] = "postgres://oplog_owner:pw@db/platforma"
			return s
		}, prodSecretProblems, "holds a password or a key"},
		{"workers let into ProfileService", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "profile-ingress")
			np.Spec.Ingress[0].From = append(np.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{
				NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"platforma.io/role": "worker"}}})
			return s
		}, networkProblems, "profile's gRPC port: a worker admitted = true, want false"},
		{"every pod of the namespace let into ProfileService", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "profile-ingress")
			np.Spec.Ingress[0].From[0].PodSelector = &metav1.LabelSelector{}
			return s
		}, networkProblems, "ProfileService's gRPC port admits [Deployment/platforma/oplog Deployment/platforma/profile"},
		{"no default deny", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			return remove(s, "NetworkPolicy", "default-deny-ingress")
		}, networkProblems, "Job/platforma/profile-migrate is not selected by any ingress policy"},
		{"metrics open to everyone", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "oplog-ingress")
			np.Spec.Ingress[1].From = nil
			return s
		}, networkProblems, "oplog's metrics port admits a worker"},
		{"the health port opened to the namespace", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "oplog-ingress")
			health := intstr.FromString("health")
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &health}},
			})
			return s
		}, networkProblems, "oplog's health port admits [Deployment/platforma/oplog"},
		{"Prometheus shut out", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "reviewmeta-ingress")
			np.Spec.Ingress = np.Spec.Ingress[:1]
			return s
		}, networkProblems, "Prometheus cannot scrape reviewmeta's metrics port"},
		{"Postgres open to the namespace", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "postgres-ingress")
			np.Spec.Ingress[0].From[0].PodSelector = &metav1.LabelSelector{}
			return s
		}, devPostgresProblems, "Postgres admits an unrelated pod of the namespace"},
		{"Postgres closed to the migrate Jobs", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			for _, j := range manifests.Of[*batchv1.Job](s) {
				if strings.HasSuffix(j.Name, "-migrate") {
					j.Spec.Template.Labels["app.kubernetes.io/name"] = j.Name
				}
			}
			return s
		}, devPostgresProblems, "Postgres admits"},
		{"no DNS in production", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			return remove(s, "NetworkPolicy", "platforma-egress-dns")
		}, prodEgressProblems, "cannot resolve names (DNS over UDP)"},
		{"the Jobs cut off from Postgres in production", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "platforma-egress-postgres")
			np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/component": "server"}}
			return s
		}, prodEgressProblems, "Job/platforma/oplog-bootstrap cannot reach Postgres"},
		{"Postgres's port open to the world", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			np := find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "platforma-egress-postgres")
			np.Spec.Egress[0].To[0].IPBlock.CIDR = "0.0.0.0/0"
			return s
		}, prodEgressProblems, "may reach any address on 5432"},
		{"the relay cut off", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			return remove(s, "NetworkPolicy", "oplog-egress")
		}, prodEgressProblems, "the login relay cannot reach ProfileService"},
		{"the relay aimed at a ClusterIP-less name", "dev", func(t *testing.T, s manifests.Set) manifests.Set {
			configMapOf(t, s, "oplog", "oplog-config").Data["PROFILE_ADDR"] = "profile:50051"
			return s
		}, relayTargetProblems, "want dns:///"},
		{"the relay aimed at the wrong port", "prod", func(t *testing.T, s manifests.Set) manifests.Set {
			configMapOf(t, s, "oplog", "oplog-config").Data["PROFILE_ADDR"] = "dns:///profile.platforma.svc.cluster.local:50052"
			return s
		}, relayTargetProblems, "has no port 50052"},
	} {
		t.Run(tc.env+"/"+tc.name, func(t *testing.T) {
			s := envNamed(t, tc.env).objects(t)
			require.NoError(t, tc.check(s), "the unbroken render passes")
			broken := tc.break_(t, s.DeepCopy())
			err := tc.check(broken)
			require.Error(t, err, "the check must catch it")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// The probe rules follow HEALTH_ADDR wherever it is set, as the binary
// reads it (command line over environment over ConfigMap), and the port
// named health wherever it is: moved consistently, the probes pass; the
// broken cases above show that moving one piece alone fails.
func TestProbesFollowTheHealthListenerWhereverItIs(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(c *corev1.Container)
	}{
		{"on the command line", func(c *corev1.Container) { c.Args = append(c.Args, "-health-addr", ":9470") }},
		{"in the environment", func(c *corev1.Container) {
			c.Env = append(c.Env, corev1.EnvVar{Name: "HEALTH_ADDR", Value: "0.0.0.0:9470"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := envNamed(t, "dev").objects(t).DeepCopy()
			c := container(t, s, "profile")
			tc.set(c)
			for i := range c.Ports {
				if c.Ports[i].Name == "health" {
					c.Ports[i].ContainerPort = 9470
				}
			}
			c.ReadinessProbe.GRPC.Port, c.LivenessProbe.GRPC.Port = 9470, 9470
			assert.NoError(t, manifests.CheckServers(s, manifests.ServerPolicy{Flags: flags(t)}))
		})
	}
}

// Two stages that render one object differently would undo each other.
func TestStagesThatDisagreeAreCaught(t *testing.T) {
	a := render(t, "overlays/dev/migrate").DeepCopy()
	b := render(t, "overlays/dev/bootstrap").DeepCopy()
	for _, o := range b {
		if o.GVK.Kind == "StatefulSet" {
			o.Obj.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0].Image = "postgres:16"
		}
	}
	_, err := manifests.Union(a, b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "StatefulSet/platforma/postgres: rendered differently by two stages")
}

// The validation that needs no server catches what strict decoding cannot.
func TestValidationCatchesWhatDecodingCannot(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, s manifests.Set)
		want   string
	}{
		{"a selector that misses its template", func(t *testing.T, s manifests.Set) {
			deployment(t, s, "profile").Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "oplog"
		}, "selector does not match template labels"},
		{"a mount of an undeclared volume", func(t *testing.T, s manifests.Set) {
			container(t, s, "oplog").VolumeMounts[0].Name = "certs"
		}, `volumeMounts[0].name: Not found: "certs"`},
		{"a probe with two handlers", func(t *testing.T, s manifests.Set) {
			container(t, s, "oplog").LivenessProbe.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromString("health")}
		}, "a probe needs exactly one handler"},
		{"a request above its limit", func(t *testing.T, s manifests.Set) {
			c := container(t, s, "reviewmeta")
			c.Resources.Requests[corev1.ResourceMemory] = c.Resources.Limits[corev1.ResourceMemory].DeepCopy()
			c.Resources.Limits[corev1.ResourceMemory] = c.Resources.Requests[corev1.ResourceCPU].DeepCopy()
		}, "must not exceed the limit"},
		{"a port name too long", func(t *testing.T, s manifests.Set) {
			container(t, s, "profile").Ports[1].Name = "prometheus-metrics"
		}, "ports[1].name"},
		{"a Job that restarts Always", func(t *testing.T, s manifests.Set) {
			find[*batchv1.Job](t, s, "Job", "oplog-migrate").Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
		}, "restartPolicy: Unsupported value"},
		{"an object without a namespace", func(t *testing.T, s manifests.Set) {
			find[*networkingv1.NetworkPolicy](t, s, "NetworkPolicy", "oplog-egress").Namespace = ""
		}, "metadata.namespace: Required value"},
		{"a Service name that is no DNS label", func(t *testing.T, s manifests.Set) {
			find[*corev1.Service](t, s, "Service", "oplog").Name = "OpLog"
		}, "metadata.name: Invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := envNamed(t, "prod").objects(t).DeepCopy()
			require.NoError(t, manifests.Validate(s))
			tc.break_(t, s)
			err := manifests.Validate(s)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func prodSecretProblems(s manifests.Set) error {
	var errs []error
	for _, sec := range manifests.Of[*corev1.Secret](s) {
		errs = append(errs, fmt.Errorf("Secret %s/%s is rendered: in production Secrets are created out of band", sec.Namespace, sec.Name))
	}
	for _, where := range secretsInConfigMaps(s) {
		errs = append(errs, fmt.Errorf("ConfigMap %s holds a password or a key", where))
	}
	return errors.Join(errs...)
}

func find[T any](t *testing.T, s manifests.Set, kind, name string) T {
	t.Helper()
	for _, o := range s {
		if o.GVK.Kind == kind && o.Meta().GetName() == name {
			return o.Obj.(T)
		}
	}
	t.Fatalf("no %s %s", kind, name)
	var zero T
	return zero
}

func deployment(t *testing.T, s manifests.Set, name string) *appsv1.Deployment {
	t.Helper()
	return find[*appsv1.Deployment](t, s, "Deployment", name)
}

func container(t *testing.T, s manifests.Set, name string) *corev1.Container {
	t.Helper()
	return &deployment(t, s, name).Spec.Template.Spec.Containers[0]
}

// configMapOf is the ConfigMap named prefix (plus kustomize's hash suffix)
// that the service's Deployment reads.
func configMapOf(t *testing.T, s manifests.Set, svc, prefix string) *corev1.ConfigMap {
	t.Helper()
	for _, f := range container(t, s, svc).EnvFrom {
		if f.ConfigMapRef != nil && strings.HasPrefix(f.ConfigMapRef.Name, prefix) {
			return find[*corev1.ConfigMap](t, s, "ConfigMap", f.ConfigMapRef.Name)
		}
	}
	t.Fatalf("%s reads no ConfigMap %s", svc, prefix)
	return nil
}

func remove(s manifests.Set, kind, name string) manifests.Set {
	var out manifests.Set
	for _, o := range s {
		if o.GVK.Kind != kind || o.Meta().GetName() != name {
			out = append(out, o)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }
