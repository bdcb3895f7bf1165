package manifests

import (
	"errors"
	"fmt"
	"net"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Validate runs the part of the API server's validation that needs no
// server: what k8s.io/apimachinery exports (object metadata, names, label
// selectors, port, env and key names) and the rules of k8s.io/kubernetes's
// validation that these manifests could break and strict decoding cannot
// see (a selector that does not match its template, a probe with no or two
// handlers, a mount of an undeclared volume, requests above limits, ...).
// The full validation lives in k8s.io/kubernetes/pkg/apis/*/validation,
// which cannot be required as a module without pinning its thirty-odd
// staging modules by hand; `kubectl apply --dry-run=server` against a
// cluster runs it.
func Validate(s Set) error {
	var errs []error
	for _, o := range s {
		var list field.ErrorList
		m := o.Meta()
		nameFn := apivalidation.NameIsDNSSubdomain
		switch o.GVK.Kind {
		case "Service":
			nameFn = apivalidation.NameIsDNS1035Label
		case "Namespace":
			nameFn = apivalidation.NameIsDNSLabel
		}
		list = append(list, apivalidation.ValidateObjectMetaAccessor(m, o.GVK.Kind != "Namespace", nameFn, field.NewPath("metadata"))...)
		switch t := o.Obj.(type) {
		case *appsv1.Deployment:
			list = append(list, validateSelected(t.Spec.Selector, &t.Spec.Template, field.NewPath("spec"))...)
			list = append(list, validatePodSpec(&t.Spec.Template.Spec, []corev1.RestartPolicy{"", corev1.RestartPolicyAlways}, field.NewPath("spec", "template", "spec"))...)
		case *appsv1.StatefulSet:
			list = append(list, validateSelected(t.Spec.Selector, &t.Spec.Template, field.NewPath("spec"))...)
			var claims []string // mounted like volumes
			for _, c := range t.Spec.VolumeClaimTemplates {
				claims = append(claims, c.Name)
			}
			list = append(list, validatePodSpec(&t.Spec.Template.Spec, []corev1.RestartPolicy{"", corev1.RestartPolicyAlways}, field.NewPath("spec", "template", "spec"), claims...)...)
			if t.Spec.ServiceName == "" {
				list = append(list, field.Required(field.NewPath("spec", "serviceName"), ""))
			}
		case *batchv1.Job:
			list = append(list, metavalidation.ValidateLabels(t.Spec.Template.Labels, field.NewPath("spec", "template", "metadata", "labels"))...)
			// The API server refuses Always for a Job's pods.
			list = append(list, validatePodSpec(&t.Spec.Template.Spec, []corev1.RestartPolicy{corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure}, field.NewPath("spec", "template", "spec"))...)
			if t.Spec.PodFailurePolicy != nil && t.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
				list = append(list, field.Invalid(field.NewPath("spec", "podFailurePolicy"), "", "only with restartPolicy Never"))
			}
		case *corev1.Service:
			list = append(list, validateService(t)...)
		case *corev1.ConfigMap:
			for k := range t.Data {
				list = append(list, keyErrors(k, field.NewPath("data"))...)
			}
			for k := range t.BinaryData {
				list = append(list, keyErrors(k, field.NewPath("binaryData"))...)
			}
		case *corev1.Secret:
			for k := range t.Data {
				list = append(list, keyErrors(k, field.NewPath("data"))...)
			}
			if t.Type == corev1.SecretTypeTLS && (len(t.Data[corev1.TLSCertKey]) == 0 || len(t.Data[corev1.TLSPrivateKeyKey]) == 0) {
				list = append(list, field.Required(field.NewPath("data"), "kubernetes.io/tls needs tls.crt and tls.key"))
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			p := field.NewPath("spec")
			if t.Spec.MinReplicas != nil && (*t.Spec.MinReplicas < 1 || *t.Spec.MinReplicas > t.Spec.MaxReplicas) {
				list = append(list, field.Invalid(p.Child("minReplicas"), *t.Spec.MinReplicas, "must be from 1 to maxReplicas"))
			}
			if t.Spec.MaxReplicas < 1 {
				list = append(list, field.Invalid(p.Child("maxReplicas"), t.Spec.MaxReplicas, "must be at least 1"))
			}
		case *policyv1.PodDisruptionBudget:
			p := field.NewPath("spec")
			if (t.Spec.MinAvailable == nil) == (t.Spec.MaxUnavailable == nil) {
				list = append(list, field.Invalid(p, "", "exactly one of minAvailable and maxUnavailable"))
			}
			list = append(list, validateSelector(t.Spec.Selector, p.Child("selector"))...)
		case *networkingv1.NetworkPolicy:
			list = append(list, validateNetworkPolicy(t)...)
		}
		for _, e := range list {
			errs = append(errs, fmt.Errorf("%s: %v", o.ID, e))
		}
	}
	return errors.Join(errs...)
}

func keyErrors(k string, p *field.Path) field.ErrorList {
	var list field.ErrorList
	for _, msg := range validation.IsConfigMapKey(k) {
		list = append(list, field.Invalid(p.Key(k), k, msg))
	}
	return list
}

func validateSelector(sel *metav1.LabelSelector, p *field.Path) field.ErrorList {
	if sel == nil {
		return field.ErrorList{field.Required(p, "")}
	}
	return metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, p)
}

// validateSelected: a non-empty selector that selects its own template.
func validateSelected(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, p *field.Path) field.ErrorList {
	list := validateSelector(sel, p.Child("selector"))
	list = append(list, metavalidation.ValidateLabels(tmpl.Labels, p.Child("template", "metadata", "labels"))...)
	if len(list) > 0 {
		return list
	}
	if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		return field.ErrorList{field.Invalid(p.Child("selector"), "", "empty selector")}
	}
	if !Selects(sel, tmpl.Labels) {
		list = append(list, field.Invalid(p.Child("template", "metadata", "labels"), tmpl.Labels, "selector does not match template labels"))
	}
	return list
}

func validatePodSpec(spec *corev1.PodSpec, restart []corev1.RestartPolicy, p *field.Path, claims ...string) field.ErrorList {
	var list field.ErrorList
	okRestart := false
	for _, r := range restart {
		okRestart = okRestart || spec.RestartPolicy == r
	}
	if !okRestart {
		list = append(list, field.NotSupported(p.Child("restartPolicy"), spec.RestartPolicy, restartStrings(restart)))
	}
	volumes := map[string]bool{}
	for _, c := range claims {
		volumes[c] = true
	}
	for i, v := range spec.Volumes {
		vp := p.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			list = append(list, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes[v.Name] {
			list = append(list, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cp := p.Child("containers").Index(i)
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			list = append(list, field.Invalid(cp.Child("name"), c.Name, msg))
		}
		if names[c.Name] {
			list = append(list, field.Duplicate(cp.Child("name"), c.Name))
		}
		names[c.Name] = true
		if c.Image == "" {
			list = append(list, field.Required(cp.Child("image"), ""))
		}
		ports := map[string]bool{}
		for j, port := range c.Ports {
			pp := cp.Child("ports").Index(j)
			for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
				list = append(list, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
			}
			if port.Name != "" {
				for _, msg := range validation.IsValidPortName(port.Name) {
					list = append(list, field.Invalid(pp.Child("name"), port.Name, msg))
				}
				if ports[port.Name] {
					list = append(list, field.Duplicate(pp.Child("name"), port.Name))
				}
				ports[port.Name] = true
			}
		}
		for j, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				list = append(list, field.Invalid(cp.Child("env").Index(j).Child("name"), e.Name, msg))
			}
		}
		for j, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				list = append(list, field.NotFound(cp.Child("volumeMounts").Index(j).Child("name"), m.Name))
			}
		}
		for name, probe := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
			if probe == nil {
				continue
			}
			h := probe.ProbeHandler
			n := 0
			for _, set := range []bool{h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.GRPC != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				list = append(list, field.Invalid(cp.Child(name), n, "a probe needs exactly one handler"))
			}
		}
		for res, req := range c.Resources.Requests {
			if lim, ok := c.Resources.Limits[res]; ok && req.Cmp(lim) > 0 {
				list = append(list, field.Invalid(cp.Child("resources", "requests").Key(string(res)), req.String(), "must not exceed the limit "+lim.String()))
			}
		}
	}
	return list
}

func restartStrings(rs []corev1.RestartPolicy) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

func validateService(svc *corev1.Service) field.ErrorList {
	var list field.ErrorList
	p := field.NewPath("spec")
	list = append(list, metavalidation.ValidateLabels(svc.Spec.Selector, p.Child("selector"))...)
	names := map[string]bool{}
	for i, port := range svc.Spec.Ports {
		pp := p.Child("ports").Index(i)
		if len(svc.Spec.Ports) > 1 && port.Name == "" {
			list = append(list, field.Required(pp.Child("name"), "every port of a multi-port Service needs a name"))
		}
		for _, msg := range validation.IsDNS1123Label(port.Name) {
			if port.Name != "" {
				list = append(list, field.Invalid(pp.Child("name"), port.Name, msg))
			}
		}
		if names[port.Name] {
			list = append(list, field.Duplicate(pp.Child("name"), port.Name))
		}
		names[port.Name] = true
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			list = append(list, field.Invalid(pp.Child("port"), port.Port, msg))
		}
		if port.TargetPort.Type == intstr.String {
			for _, msg := range validation.IsValidPortName(port.TargetPort.StrVal) {
				list = append(list, field.Invalid(pp.Child("targetPort"), port.TargetPort.StrVal, msg))
			}
		}
	}
	return list
}

func validateNetworkPolicy(np *networkingv1.NetworkPolicy) field.ErrorList {
	var list field.ErrorList
	p := field.NewPath("spec")
	list = append(list, metavalidation.ValidateLabelSelector(&np.Spec.PodSelector, metavalidation.LabelSelectorValidationOptions{}, p.Child("podSelector"))...)
	for _, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			list = append(list, field.NotSupported(p.Child("policyTypes"), t, []string{"Ingress", "Egress"}))
		}
	}
	checkPeers := func(peers []networkingv1.NetworkPolicyPeer, pp *field.Path) {
		for i, peer := range peers {
			ip := pp.Index(i)
			n := 0
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				n++
			}
			if peer.IPBlock != nil {
				n++
				if _, _, err := net.ParseCIDR(peer.IPBlock.CIDR); err != nil {
					list = append(list, field.Invalid(ip.Child("ipBlock", "cidr"), peer.IPBlock.CIDR, err.Error()))
				}
			}
			if n != 1 {
				list = append(list, field.Invalid(ip, "", "a peer is selectors or an ipBlock, not both and not neither"))
			}
			for name, sel := range map[string]*metav1.LabelSelector{"podSelector": peer.PodSelector, "namespaceSelector": peer.NamespaceSelector} {
				if sel != nil {
					list = append(list, metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, ip.Child(name))...)
				}
			}
		}
	}
	checkPorts := func(ports []networkingv1.NetworkPolicyPort, pp *field.Path) {
		for i, port := range ports {
			if port.Port != nil && port.Port.Type == intstr.String {
				for _, msg := range validation.IsValidPortName(port.Port.StrVal) {
					list = append(list, field.Invalid(pp.Index(i).Child("port"), port.Port.StrVal, msg))
				}
			}
		}
	}
	for i, r := range np.Spec.Ingress {
		checkPeers(r.From, p.Child("ingress").Index(i).Child("from"))
		checkPorts(r.Ports, p.Child("ingress").Index(i).Child("ports"))
	}
	for i, r := range np.Spec.Egress {
		checkPeers(r.To, p.Child("egress").Index(i).Child("to"))
		checkPorts(r.Ports, p.Child("egress").Index(i).Child("ports"))
	}
	return list
}
