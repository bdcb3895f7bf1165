package manifests

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The evaluator follows the NetworkPolicy semantics of the Kubernetes
// documentation; the policy tests of deploy/k8s are only as good as it.
func TestAllowsFollowsNetworkPolicySemantics(t *testing.T) {
	ns := func(name string, labels map[string]string) map[string]string {
		out := map[string]string{"kubernetes.io/metadata.name": name}
		for k, v := range labels {
			out[k] = v
		}
		return out
	}
	server := Endpoint{Namespace: "app", NamespaceLabels: ns("app", nil), PodLabels: map[string]string{"role": "server"},
		Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 50051}, {Name: "metrics", ContainerPort: 9451}}}
	client := Endpoint{Namespace: "app", NamespaceLabels: ns("app", nil), PodLabels: map[string]string{"role": "client"}}
	clientElsewhere := Endpoint{Namespace: "other", NamespaceLabels: ns("other", map[string]string{"team": "x"}), PodLabels: map[string]string{"role": "client"}}
	strangerElsewhere := Endpoint{Namespace: "other", NamespaceLabels: ns("other", map[string]string{"team": "x"}), PodLabels: map[string]string{"role": "stranger"}}
	external := Endpoint{IP: net.ParseIP("10.1.2.3")}
	excluded := Endpoint{IP: net.ParseIP("10.1.9.9")}

	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	port := func(p intstr.IntOrString, proto *corev1.Protocol) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Port: &p, Protocol: proto}
	}
	sel := func(kv ...string) *metav1.LabelSelector {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return &metav1.LabelSelector{MatchLabels: m}
	}
	policy := func(spec networkingv1.NetworkPolicySpec) Object {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "app"}, Spec: spec}
		return Object{ID: "NetworkPolicy/app/p", GVK: networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"), Obj: np}
	}
	toServer := func(rules ...networkingv1.NetworkPolicyIngressRule) Object {
		return policy(networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "server"), PolicyTypes: []networkingv1.PolicyType{"Ingress"}, Ingress: rules})
	}

	for _, tc := range []struct {
		name     string
		policies []Object
		src, dst Endpoint
		port     int32
		proto    corev1.Protocol
		want     bool
	}{
		{"no policy: open", nil, client, server, 50051, tcp, true},
		{"selected without rules: closed", []Object{toServer()}, client, server, 50051, tcp, false},
		{"another pod's policy does not isolate this one",
			[]Object{policy(networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db")})}, client, server, 50051, tcp, true},
		{"podSelector alone: same namespace",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "client")}}})},
			client, server, 50051, tcp, true},
		{"podSelector alone: not another namespace's pod",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "client")}}})},
			clientElsewhere, server, 50051, tcp, false},
		{"namespaceSelector alone: every pod there",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "x")}}})},
			strangerElsewhere, server, 50051, tcp, true},
		{"both in one peer: and",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "x"), PodSelector: sel("role", "client")}}})},
			strangerElsewhere, server, 50051, tcp, false},
		{"two peers: or",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "nobody")}, {NamespaceSelector: sel("team", "x")}}})},
			strangerElsewhere, server, 50051, tcp, true},
		{"named port: the destination's",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("grpc"), nil)}})},
			client, server, 50051, tcp, true},
		{"named port: not another port",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("grpc"), nil)}})},
			client, server, 9451, tcp, false},
		{"protocol: TCP by default, not UDP",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(53), nil)}})},
			client, server, 53, udp, false},
		{"port range",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: ptrTo(intstr.FromInt32(9000)), EndPort: ptrTo(int32(9500))}}})},
			client, server, 9451, tcp, true},
		{"ipBlock",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.1.0.0/16", Except: []string{"10.1.9.0/24"}}}}})},
			external, server, 50051, tcp, true},
		{"ipBlock: except",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.1.0.0/16", Except: []string{"10.1.9.0/24"}}}}})},
			excluded, server, 50051, tcp, false},
		{"ipBlock does not match pods by label",
			[]Object{toServer(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}}})},
			client, server, 50051, tcp, false},
		{"egress isolation: the source's policy",
			[]Object{policy(networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "client"), PolicyTypes: []networkingv1.PolicyType{"Egress"}})},
			client, server, 50051, tcp, false},
		{"egress rules without policyTypes isolate egress",
			[]Object{policy(networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "client"),
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "db")}}}}})},
			client, server, 50051, tcp, false},
		{"an egress-only policy leaves ingress open",
			[]Object{policy(networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "server"), PolicyTypes: []networkingv1.PolicyType{"Egress"}})},
			client, server, 50051, tcp, true},
		{"egress to an address",
			[]Object{policy(networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "client"), PolicyTypes: []networkingv1.PolicyType{"Egress"},
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.1.2.3/32"}}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5432), &tcp)}}}})},
			client, external, 5432, tcp, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Set(tc.policies)
			assert.Equal(t, tc.want, s.Allows(tc.src, tc.dst, tc.port, tc.proto))
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
