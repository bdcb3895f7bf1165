package manifests

import (
	"errors"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
)

// Object is one decoded object.
type Object struct {
	// ID is kind/namespace/name.
	ID  string
	GVK schema.GroupVersionKind
	// Obj is a pointer to the k8s.io/api struct of GVK, e.g.
	// *appsv1.Deployment.
	Obj runtime.Object
}

// Meta is the object's metadata.
func (o Object) Meta() metav1.Object {
	m, err := meta.Accessor(o.Obj)
	if err != nil {
		panic(err) // every kind the scheme knows has metadata
	}
	return m
}

// Set is the objects of one or more renders.
type Set []Object

// Kinds are the kinds the checks of this package understand. An object of
// any other kind fails to decode even when k8s.io/api knows it: a new kind
// in the manifests needs its policy here first (a Role, say, or an Ingress).
var Kinds = []schema.GroupVersionKind{
	corev1.SchemeGroupVersion.WithKind("Namespace"),
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"),
	corev1.SchemeGroupVersion.WithKind("ConfigMap"),
	corev1.SchemeGroupVersion.WithKind("Secret"),
	corev1.SchemeGroupVersion.WithKind("Service"),
	appsv1.SchemeGroupVersion.WithKind("Deployment"),
	appsv1.SchemeGroupVersion.WithKind("StatefulSet"),
	batchv1.SchemeGroupVersion.WithKind("Job"),
	autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler"),
	policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"),
	networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"),
}

var (
	scheme  = runtime.NewScheme()
	decoder runtime.Decoder
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		autoscalingv2.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	// Strict: a field the struct does not have, or one given twice, is an
	// error, where the API server's default (and kubectl's) would drop it
	// with at most a warning. A misspelled field silently ignored is how a
	// probe or a limit goes missing.
	decoder = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
}

// Decode decodes every document strictly into its typed struct. It returns
// every document's problem at once.
func Decode(docs []Doc) (Set, error) {
	known := map[schema.GroupVersionKind]bool{}
	for _, k := range Kinds {
		known[k] = true
	}
	var set Set
	var errs []error
	for _, d := range docs {
		obj, gvk, err := decoder.Decode(d.YAML, nil, nil)
		switch {
		case err != nil:
			// A strict decoding error comes with the object decoded
			// leniently; it is still a failure.
			errs = append(errs, fmt.Errorf("%s: %w", d.ID, err))
			continue
		case !known[*gvk]:
			errs = append(errs, fmt.Errorf("%s: %s is not a kind these checks know (manifests.Kinds)", d.ID, gvk))
			continue
		}
		set = append(set, Object{ID: d.ID, GVK: *gvk, Obj: obj})
	}
	return set, errors.Join(errs...)
}

// Union merges the objects of several renders (the stages of one overlay,
// applied one after the other into one namespace). An object in more than
// one render must be the same in each, or the later apply would change
// what the earlier one set up.
func Union(sets ...Set) (Set, error) {
	seen := map[string]Object{}
	var out Set
	var errs []error
	for _, s := range sets {
		for _, o := range s {
			if prev, ok := seen[o.ID]; ok {
				if !equality.Semantic.DeepEqual(prev.Obj, o.Obj) {
					errs = append(errs, fmt.Errorf("%s: rendered differently by two stages", o.ID))
				}
				continue
			}
			seen[o.ID] = o
			out = append(out, o)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(errs...)
}

// Of returns the objects of type T, e.g. Of[*appsv1.Deployment](set).
func Of[T runtime.Object](s Set) []T {
	var out []T
	for _, o := range s {
		if t, ok := o.Obj.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// Find returns the object of kind in namespace with name.
func (s Set) Find(kind, namespace, name string) (Object, bool) {
	for _, o := range s {
		m := o.Meta()
		if o.GVK.Kind == kind && m.GetNamespace() == namespace && m.GetName() == name {
			return o, true
		}
	}
	return Object{}, false
}

// Workload is an object that runs pods.
type Workload struct {
	Kind      string
	Namespace string
	Name      string
	Template  *corev1.PodTemplateSpec
	// Selector is the workload's label selector (nil for a Job, whose
	// selector the API server generates).
	Selector *metav1.LabelSelector
	Obj      runtime.Object
}

// ID is kind/namespace/name.
func (w Workload) ID() string { return w.Kind + "/" + w.Namespace + "/" + w.Name }

// Workloads are the Deployments, StatefulSets and Jobs.
func (s Set) Workloads() []Workload {
	var out []Workload
	for _, o := range s {
		m := o.Meta()
		w := Workload{Kind: o.GVK.Kind, Namespace: m.GetNamespace(), Name: m.GetName(), Obj: o.Obj}
		switch t := o.Obj.(type) {
		case *appsv1.Deployment:
			w.Template, w.Selector = &t.Spec.Template, t.Spec.Selector
		case *appsv1.StatefulSet:
			w.Template, w.Selector = &t.Spec.Template, t.Spec.Selector
		case *batchv1.Job:
			w.Template = &t.Spec.Template
		default:
			continue
		}
		out = append(out, w)
	}
	return out
}

// DeepCopy copies every object, for tests that break a copy.
func (s Set) DeepCopy() Set {
	out := make(Set, len(s))
	for i, o := range s {
		out[i] = Object{ID: o.ID, GVK: o.GVK, Obj: o.Obj.DeepCopyObject()}
	}
	return out
}
