package manifests

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// EnvVar is one environment variable of a container as the kubelet would
// set it.
type EnvVar struct {
	Name string
	// Value is the value when it is known from the render: given inline or
	// from a ConfigMap of the set.
	Value string
	Known bool
	// Secret is the Secret it comes from, if any.
	Secret string
	// Source says where it comes from, for messages.
	Source string
}

// Env is container c's environment in namespace ns: the envFrom sources in
// order (a later one wins), then env (which wins over envFrom). Sources
// that are not in the set (Secrets created out of band) cannot be listed;
// their names are returned as opaque.
func (s Set) Env(ns string, c *corev1.Container) (vars map[string]EnvVar, opaque []string) {
	vars = map[string]EnvVar{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			o, ok := s.Find("ConfigMap", ns, from.ConfigMapRef.Name)
			if !ok {
				opaque = append(opaque, "configMap "+from.ConfigMapRef.Name)
				continue
			}
			for k, v := range o.Obj.(*corev1.ConfigMap).Data {
				vars[from.Prefix+k] = EnvVar{Name: from.Prefix + k, Value: v, Known: true, Source: "configMap " + from.ConfigMapRef.Name}
			}
		case from.SecretRef != nil:
			o, ok := s.Find("Secret", ns, from.SecretRef.Name)
			if !ok {
				opaque = append(opaque, "secret "+from.SecretRef.Name)
				continue
			}
			for k := range o.Obj.(*corev1.Secret).Data {
				vars[from.Prefix+k] = EnvVar{Name: from.Prefix + k, Secret: from.SecretRef.Name, Source: "secret " + from.SecretRef.Name}
			}
		}
	}
	for _, e := range c.Env {
		v := EnvVar{Name: e.Name}
		switch {
		case e.ValueFrom == nil:
			v.Value, v.Known, v.Source = e.Value, true, "value"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v.Source = "configMap " + ref.Name
			if o, ok := s.Find("ConfigMap", ns, ref.Name); ok {
				v.Value, v.Known = o.Obj.(*corev1.ConfigMap).Data[ref.Key]
			}
		case e.ValueFrom.SecretKeyRef != nil:
			v.Secret, v.Source = e.ValueFrom.SecretKeyRef.Name, "secret "+e.ValueFrom.SecretKeyRef.Name
		case e.ValueFrom.FieldRef != nil:
			v.Source = "field " + e.ValueFrom.FieldRef.FieldPath
		case e.ValueFrom.ResourceFieldRef != nil:
			v.Source = "resource " + e.ValueFrom.ResourceFieldRef.Resource
		}
		vars[e.Name] = v
	}
	return vars, opaque
}

// Setting is a flag's value as a container gives it: on its command line
// (-name=value, --name value, ...), else in its environment variable.
// found is false when neither sets it.
func (s Set) Setting(ns string, c *corev1.Container, flagName string) (value string, known, found bool) {
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != flagName {
			continue
		}
		if hasVal {
			return val, true, true
		}
		if i+1 < len(args) {
			return args[i+1], true, true
		}
	}
	vars, _ := s.Env(ns, c)
	if v, ok := vars[EnvName(flagName)]; ok {
		return v.Value, v.Known, true
	}
	return "", false, false
}

// EnvName is the environment variable of a flag, as the binaries derive it
// (services/kit/app.EnvName): -database-url ⇔ DATABASE_URL.
func EnvName(flagName string) string {
	return strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Selects reports whether sel selects a pod with these labels. A nil
// selector selects nothing; an empty one everything.
func Selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	if sel == nil {
		return false
	}
	ls, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return ls.Matches(labels.Set(podLabels))
}

// Container returns the workload's container running image repository repo
// (e.g. platforma/oplog), or nil.
func (w Workload) Container(repo string) *corev1.Container {
	for i := range w.Template.Spec.Containers {
		c := &w.Template.Spec.Containers[i]
		if ImageRepo(c.Image) == repo {
			return c
		}
	}
	return nil
}

// ImageRepo is an image reference without its tag or digest.
func ImageRepo(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// ImageTag is an image reference's tag, "" when it has none.
func ImageTag(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	return ""
}

// Platform is the service a workload runs, from its platforma/<service>
// image (under any registry: registry.example.com/platforma/oplog), and
// that container; "" and nil for other workloads (the dev Postgres).
func (w Workload) Platform() (service string, c *corev1.Container) {
	for i := range w.Template.Spec.Containers {
		c := &w.Template.Spec.Containers[i]
		if svc := PlatformService(c.Image); svc != "" {
			return svc, c
		}
	}
	return "", nil
}

// PlatformService is the service of a platforma/<service> image, "" for
// any other image.
func PlatformService(image string) string {
	repo := ImageRepo(image)
	if repo != "platforma" && !strings.HasPrefix(repo, "platforma/") {
		i := strings.LastIndex(repo, "/platforma/")
		if i < 0 {
			return ""
		}
		repo = repo[i+1:]
	}
	svc, ok := strings.CutPrefix(repo, "platforma/")
	if !ok || svc == "" || strings.Contains(svc, "/") {
		return ""
	}
	return svc
}

// Command is what the platform container runs: its first argument (serve,
// migrate, bootstrap, ...). The image's default command is serve.
func Command(c *corev1.Container) string {
	args := append(append([]string{}, c.Command...), c.Args...)
	for _, a := range args {
		if !strings.HasPrefix(a, "/") && !strings.HasPrefix(a, "-") {
			return a
		}
	}
	return "serve"
}

func describe(w Workload, c *corev1.Container) string {
	return fmt.Sprintf("%s container %s", w.ID(), c.Name)
}
