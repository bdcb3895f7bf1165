// Package balance is how clients of the platform's services spread their
// calls over replicas.
package balance

import "google.golang.org/grpc"

// serviceConfig asks for round_robin: one connection to every address the
// target resolves to, calls taken in turn. gRPC's default, pick_first,
// sends every call of a client to the first address it reaches, so a
// headless Service or any dns:/// target listing several replicas would
// load one of them only.
const serviceConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// RoundRobin is the dial option that balances calls over every resolved
// address (dns:///host:port resolves all A/AAAA records, and re-resolves
// when a connection fails). A service config published by the resolver
// takes precedence, as gRPC defines for default service configs.
func RoundRobin() grpc.DialOption { return grpc.WithDefaultServiceConfig(serviceConfig) }
