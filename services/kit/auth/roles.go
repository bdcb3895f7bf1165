package auth

import (
	"strings"
)

// Role is what a caller may do. A caller has one or more.
type Role uint8

// The roles. Certificates give worker or service (from their SPIFFE ID);
// bearer tokens give whatever their roles claim says.
const (
	// Worker: the browser workers. Writes (Ingest, login results, review
	// metadata, reply attempts) and the reads their work needs.
	Worker Role = 1 << iota
	// Service: another platforma service; today the OpLog relay calling
	// ProfileService.BatchRecordLoginResults.
	Service
	// Operator: people and dashboards. Lists, statistics, Get*.
	Operator
	// Admin: operator's rights plus the life cycle of the dead letters.
	Admin
)

// Roles is a set of roles.
type Roles uint8

// Of is the set of the given roles.
func Of(roles ...Role) Roles {
	var s Roles
	for _, r := range roles {
		s |= Roles(r)
	}
	return s
}

// Has reports whether r is in the set.
func (s Roles) Has(r Role) bool { return s&Roles(r) != 0 }

// Any reports whether the sets share a role.
func (s Roles) Any(o Roles) bool { return s&o != 0 }

var roleNames = []struct {
	role Role
	name string
}{
	{Worker, "worker"},
	{Service, "service"},
	{Operator, "operator"},
	{Admin, "admin"},
}

func (r Role) String() string {
	for _, n := range roleNames {
		if n.role == r {
			return n.name
		}
	}
	return "unknown"
}

// ParseRole is the role of a name (worker, service, operator, admin).
func ParseRole(name string) (Role, bool) {
	for _, n := range roleNames {
		if n.name == name {
			return n.role, true
		}
	}
	return 0, false
}

// Names are the roles' names, in a fixed order.
func (s Roles) Names() []string {
	var out []string
	for _, n := range roleNames {
		if s.Has(n.role) {
			out = append(out, n.name)
		}
	}
	return out
}

func (s Roles) String() string {
	if s == 0 {
		return "none"
	}
	return strings.Join(s.Names(), ", ")
}
