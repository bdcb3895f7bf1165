package manifests

import (
	"net"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Endpoint is one end of a connection as NetworkPolicies see it: a pod
// (its namespace's labels and its own) or an address outside the cluster.
type Endpoint struct {
	Namespace       string
	NamespaceLabels map[string]string
	PodLabels       map[string]string
	// IP is set for an address outside the cluster; pods are matched by
	// labels only.
	IP net.IP
	// Ports are the pod's container ports, which named ports in policies
	// resolve against.
	Ports []corev1.ContainerPort
	Name  string
}

// Pod is a workload's pod as an Endpoint. The namespace's labels are those
// of the Namespace object in the set, plus the one the API server sets.
func (s Set) Pod(w Workload) Endpoint {
	e := Endpoint{Namespace: w.Namespace, PodLabels: w.Template.Labels, Name: w.ID()}
	e.NamespaceLabels = map[string]string{"kubernetes.io/metadata.name": w.Namespace}
	if o, ok := s.Find("Namespace", "", w.Namespace); ok {
		for k, v := range o.Meta().GetLabels() {
			e.NamespaceLabels[k] = v
		}
	}
	for _, c := range w.Template.Spec.Containers {
		e.Ports = append(e.Ports, c.Ports...)
	}
	return e
}

// Isolated reports whether some policy selects the pod for the direction,
// so that only what the policies allow gets through.
func (s Set) Isolated(e Endpoint, dir networkingv1.PolicyType) bool {
	return len(s.policies(e, dir)) > 0
}

func (s Set) policies(e Endpoint, dir networkingv1.PolicyType) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, np := range Of[*networkingv1.NetworkPolicy](s) {
		if e.IP != nil || np.Namespace != e.Namespace || !Selects(&np.Spec.PodSelector, e.PodLabels) {
			continue
		}
		if hasType(np, dir) {
			out = append(out, np)
		}
	}
	return out
}

// hasType: policyTypes as the API server defaults them (Ingress always,
// Egress when there are egress rules).
func hasType(np *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return dir == networkingv1.PolicyTypeIngress || (dir == networkingv1.PolicyTypeEgress && len(np.Spec.Egress) > 0)
	}
	for _, t := range np.Spec.PolicyTypes {
		if t == dir {
			return true
		}
	}
	return false
}

// Allows reports whether the policies of the set let src open a
// connection to dst on port (a number) and protocol: egress from src and
// ingress to dst must both allow it. Pods not selected by any policy of a
// direction are open in that direction.
func (s Set) Allows(src, dst Endpoint, port int32, protocol corev1.Protocol) bool {
	return s.allows(dst, src, dst, port, protocol, networkingv1.PolicyTypeIngress) &&
		s.allows(src, src, dst, port, protocol, networkingv1.PolicyTypeEgress)
}

func (s Set) allows(subject, src, dst Endpoint, port int32, protocol corev1.Protocol, dir networkingv1.PolicyType) bool {
	if subject.IP != nil {
		return true // outside the cluster: no policy of ours applies
	}
	nps := s.policies(subject, dir)
	if len(nps) == 0 {
		return true
	}
	for _, np := range nps {
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if portsMatch(r.Ports, dst, port, protocol) && peersMatch(r.From, np.Namespace, src) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if portsMatch(r.Ports, dst, port, protocol) && peersMatch(r.To, np.Namespace, dst) {
					return true
				}
			}
		}
	}
	return false
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, dst Endpoint, port int32, protocol corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != protocol {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.String {
			// A named port is the destination pod's container port.
			for _, cp := range dst.Ports {
				cproto := cp.Protocol
				if cproto == "" {
					cproto = corev1.ProtocolTCP
				}
				if cp.Name == p.Port.StrVal && cp.ContainerPort == port && cproto == protocol {
					return true
				}
			}
			continue
		}
		end := p.Port.IntVal
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if port >= p.Port.IntVal && port <= end {
			return true
		}
	}
	return false
}

func peersMatch(peers []networkingv1.NetworkPolicyPeer, policyNamespace string, e Endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			if e.IP == nil {
				// Policies match pods by labels; an ipBlock is for
				// addresses outside the cluster (and its behaviour for pod
				// IPs depends on the network plugin).
				continue
			}
			_, cidr, err := net.ParseCIDR(p.IPBlock.CIDR)
			if err != nil || !cidr.Contains(e.IP) {
				continue
			}
			excluded := false
			for _, ex := range p.IPBlock.Except {
				if _, n, err := net.ParseCIDR(ex); err == nil && n.Contains(e.IP) {
					excluded = true
				}
			}
			if !excluded {
				return true
			}
			continue
		}
		if e.IP != nil {
			continue
		}
		if p.NamespaceSelector == nil {
			if e.Namespace != policyNamespace {
				continue
			}
		} else if !Selects(p.NamespaceSelector, e.NamespaceLabels) {
			continue
		}
		if p.PodSelector != nil && !Selects(p.PodSelector, e.PodLabels) {
			continue
		}
		return true
	}
	return false
}

// IngressPeers are the peers of every ingress rule that admits
// connections to dst on port: what a test inspects to prove that nothing
// outside the rendered pods (another namespace, an address) gets in.
func (s Set) IngressPeers(dst Endpoint, port int32, protocol corev1.Protocol) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for _, np := range s.policies(dst, networkingv1.PolicyTypeIngress) {
		for _, r := range np.Spec.Ingress {
			if !portsMatch(r.Ports, dst, port, protocol) {
				continue
			}
			if len(r.From) == 0 {
				// Everyone: an empty peer stands for it.
				out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: emptySelector(), PodSelector: emptySelector()})
			}
			out = append(out, r.From...)
		}
	}
	return out
}

func emptySelector() *metav1.LabelSelector { return &metav1.LabelSelector{} }
