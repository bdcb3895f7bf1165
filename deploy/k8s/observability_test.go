package k8s_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/platforma/platforma/deploy/k8s/manifests"
)

const observability = "../observability"

// promConfig is the part of a Prometheus configuration the checks read.
type promConfig struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName      string `json:"job_name"`
		DNSSDConfigs []struct {
			Names []string `json:"names"`
			Type  string   `json:"type"`
			Port  int32    `json:"port"`
		} `json:"dns_sd_configs"`
	} `json:"scrape_configs"`
}

func readPromConfig(t *testing.T, file string) promConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(observability, file))
	require.NoError(t, err)
	var c promConfig
	require.NoError(t, yaml.Unmarshal(b, &c))
	return c
}

func jobNames(c promConfig) []string {
	var names []string
	for _, sc := range c.ScrapeConfigs {
		names = append(names, sc.JobName)
	}
	slices.Sort(names)
	return names
}

// The Kubernetes scrape configuration keeps the jobs the alert rules select
// on, and each job finds the pods of its service in the production render:
// a headless Service listing every pod, ready or not, and the pods' metrics
// port.
func TestPrometheusFindsThePods(t *testing.T) {
	local, k8s := readPromConfig(t, "prometheus.yml"), readPromConfig(t, "prometheus-k8s.yml")
	require.Equal(t, jobNames(local), jobNames(k8s), "alerts.yml selects on these job names")
	assert.NoError(t, scrapeProblems(k8s, envNamed(t, "prod").objects(t)))
}

func scrapeProblems(c promConfig, s manifests.Set) error {
	var errs []string
	for _, sc := range c.ScrapeConfigs {
		svc := strings.TrimPrefix(sc.JobName, "platforma-")
		w, ok := findServer(s, svc)
		if !ok {
			errs = append(errs, fmt.Sprintf("job %s: no Deployment of %s", sc.JobName, svc))
			continue
		}
		_, c := w.Platform()
		if len(sc.DNSSDConfigs) != 1 || len(sc.DNSSDConfigs[0].Names) != 1 || sc.DNSSDConfigs[0].Type != "A" {
			errs = append(errs, fmt.Sprintf("job %s: want one dns_sd_config of type A with one name", sc.JobName))
			continue
		}
		sd := sc.DNSSDConfigs[0]
		if sd.Port != portNamed(c, "metrics") {
			errs = append(errs, fmt.Sprintf("job %s scrapes port %d, the metrics port is %d", sc.JobName, sd.Port, portNamed(c, "metrics")))
		}
		name, ns, _ := strings.Cut(strings.TrimSuffix(sd.Names[0], ".svc.cluster.local"), ".")
		o, ok := s.Find("Service", ns, name)
		if !ok {
			errs = append(errs, fmt.Sprintf("job %s: no Service %s/%s", sc.JobName, ns, name))
			continue
		}
		service := o.Obj.(*corev1.Service)
		switch {
		case service.Spec.ClusterIP != corev1.ClusterIPNone:
			errs = append(errs, fmt.Sprintf("job %s: Service %s is not headless: its name would resolve to one virtual IP", sc.JobName, name))
		case !service.Spec.PublishNotReadyAddresses:
			errs = append(errs, fmt.Sprintf("job %s: Service %s lists ready pods only: a pod that runs but fails would be no target rather than a target that is down", sc.JobName, name))
		case !manifests.Selects(manifests.MapSelector(service.Spec.Selector), w.Template.Labels):
			errs = append(errs, fmt.Sprintf("job %s: Service %s does not select %s's pods", sc.JobName, name, w.ID()))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

func TestPrometheusScrapeChecksCatchDrift(t *testing.T) {
	k8s := readPromConfig(t, "prometheus-k8s.yml")
	s := envNamed(t, "prod").objects(t).DeepCopy()
	find[*corev1.Service](t, s, "Service", "oplog-metrics").Spec.PublishNotReadyAddresses = false
	container(t, s, "profile").Ports[1].ContainerPort = 9999
	err := scrapeProblems(k8s, s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "job platforma-oplog: Service oplog-metrics lists ready pods only")
	assert.Contains(t, err.Error(), "job platforma-profile scrapes port 9451, the metrics port is 9999")
}

// The ConfigMap holds the files as they are, prometheus.yml being the
// Kubernetes configuration, and every rule file it names beside it.
func TestPrometheusConfigMap(t *testing.T) {
	k8s := readPromConfig(t, "prometheus-k8s.yml")
	for _, s := range []manifests.Set{render(t, observability), envNamed(t, "prod").objects(t)} {
		cms := manifests.Of[*corev1.ConfigMap](s)
		i := slices.IndexFunc(cms, func(cm *corev1.ConfigMap) bool { return cm.Name == "platforma-prometheus" })
		require.GreaterOrEqual(t, i, 0, "no ConfigMap platforma-prometheus (its name is what Prometheus mounts: no hash suffix)")
		cm := cms[i]
		assert.Equal(t, "monitoring", cm.Namespace)
		want := map[string]string{"prometheus.yml": "prometheus-k8s.yml"}
		for _, f := range k8s.RuleFiles {
			require.NotContains(t, f, "/", "rule files are keys of the same ConfigMap, mounted beside prometheus.yml")
			want[f] = f
		}
		require.Len(t, cm.Data, len(want))
		for key, file := range want {
			b, err := os.ReadFile(filepath.Join(observability, file))
			require.NoError(t, err)
			assert.Equal(t, string(b), cm.Data[key], "key %s", key)
		}
	}
}
