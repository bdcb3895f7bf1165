package auth

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
)

// Class is the rate-limit class of a method: each caller has a token
// bucket per class (see RateLimits).
type Class uint8

const (
	// ClassNone: public methods, not limited.
	ClassNone Class = iota
	ClassWrite
	ClassRead
	ClassAdmin
)

func (c Class) String() string {
	switch c {
	case ClassWrite:
		return "write"
	case ClassRead:
		return "read"
	case ClassAdmin:
		return "admin"
	}
	return "none"
}

// Rule is who may call one method.
type Rule struct {
	// Public: anyone, without credentials (health, reflection). Nothing
	// else is looked at, credentials included.
	Public bool
	// Roles may call the method (any one of them suffices).
	Roles Roles
	// Class is the method's rate-limit class.
	Class Class
	// Audit: a call by an operator or admin leaves an audit line (who,
	// which method, the request without its page token).
	Audit bool
}

// Table maps full method names ("/package.Service/Method") to their
// rules.
type Table map[string]Rule

// Role sets of the table below.
var (
	workers       = Of(Worker)
	relay         = Of(Worker, Service)
	operators     = Of(Operator, Admin)
	workersAndOps = Of(Worker, Operator, Admin)
	admins        = Of(Admin)
)

func write(roles Roles) Rule { return Rule{Roles: roles, Class: ClassWrite} }
func read(roles Roles) Rule  { return Rule{Roles: roles, Class: ClassRead} }

// audited is r with an audit line for operators' and admins' calls.
func audited(r Rule) Rule { r.Audit = true; return r }

var public = Rule{Public: true}

// Methods is THE table: every method any platforma server serves, and who
// may call it. A server refuses to start when one of the services it
// registers has a method without a rule here, or a rule here names a
// method its service does not have (Check). README "Security" shows it
// as a table.
var Methods = Table{
	// OpLogService: workers write the log; operators read it; admins
	// handle the login outcomes ProfileService refused.
	oplogv1.OpLogService_Ingest_FullMethodName:                 write(workers),
	oplogv1.OpLogService_ListOperationLogs_FullMethodName:      audited(read(operators)),
	oplogv1.OpLogService_GetOperationStats_FullMethodName:      audited(read(operators)),
	oplogv1.OpLogService_GetProxyStats_FullMethodName:          audited(read(operators)),
	oplogv1.OpLogService_GetFailureRateSeries_FullMethodName:   audited(read(operators)),
	oplogv1.OpLogService_ListLoginDeadLetters_FullMethodName:   audited(Rule{Roles: admins, Class: ClassAdmin}),
	oplogv1.OpLogService_ReplayLoginDeadLetters_FullMethodName: audited(Rule{Roles: admins, Class: ClassAdmin}),

	// ProfileService: workers report logins and read their account's
	// profile; the OpLog relay (service) forwards logged logins.
	profilev1.ProfileService_RecordLoginResult_FullMethodName:        write(workers),
	profilev1.ProfileService_BatchRecordLoginResults_FullMethodName:  write(relay),
	profilev1.ProfileService_GetProfile_FullMethodName:               audited(read(workersAndOps)),
	profilev1.ProfileService_ListProfiles_FullMethodName:             audited(read(operators)),
	profilev1.ProfileService_GetStabilityDistribution_FullMethodName: audited(read(operators)),
	// Schedulers (a worker's or a service's certificate) and operators
	// watch grade changes; one rate-limit token per watch, not per event.
	profilev1.ProfileService_WatchProfileChanges_FullMethodName: audited(read(Of(Worker, Service, Operator, Admin))),

	// ReviewMetadataService: scrapers and the reply worker write; the
	// reply worker lists the reviews waiting for a reply (reply_state
	// PENDING), so workers may list too.
	reviewmetav1.ReviewMetadataService_UpsertReviewMetadata_FullMethodName:      write(workers),
	reviewmetav1.ReviewMetadataService_BatchUpsertReviewMetadata_FullMethodName: write(workers),
	reviewmetav1.ReviewMetadataService_RecordReplyAttempt_FullMethodName:        write(workers),
	reviewmetav1.ReviewMetadataService_GetReviewMetadata_FullMethodName:         read(workersAndOps),
	reviewmetav1.ReviewMetadataService_ListReviewMetadata_FullMethodName:        read(workersAndOps),
	reviewmetav1.ReviewMetadataService_GetReplyStats_FullMethodName:             read(operators),

	// Health is for probes and load balancers: open. Reflection only
	// describes the API (the same .proto files this repository publishes),
	// never data: open, so grpcurl can list and describe without a token.
	healthgrpc.Health_Check_FullMethodName:                                 public,
	healthgrpc.Health_List_FullMethodName:                                  public,
	healthgrpc.Health_Watch_FullMethodName:                                 public,
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      public,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: public,
}

// With returns a copy of t with the rules of more added (replacing t's for
// the same method). For services outside the platform, such as tests'.
func (t Table) With(more Table) Table {
	out := maps.Clone(t)
	maps.Copy(out, more)
	return out
}

// AllMethods gives every method of desc the same rule; for tests' own
// services.
func AllMethods(desc *grpc.ServiceDesc, r Rule) Table {
	t := Table{}
	for _, m := range desc.Methods {
		t["/"+desc.ServiceName+"/"+m.MethodName] = r
	}
	for _, s := range desc.Streams {
		t["/"+desc.ServiceName+"/"+s.StreamName] = r
	}
	return t
}

// Check compares the table with the services a server registered
// (grpc.Server.GetServiceInfo): every method of a registered service must
// have a rule, and every rule of a registered service must name one of its
// methods. Rules of services the server does not register are other
// binaries' and are not looked at.
func (t Table) Check(services map[string]grpc.ServiceInfo) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(services)) {
		methods := map[string]bool{}
		for _, m := range services[name].Methods {
			full := "/" + name + "/" + m.Name
			methods[full] = true
			r, ok := t[full]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s has no rule in the method table (services/kit/auth/methods.go)", full))
			case !r.Public && r.Roles == 0:
				errs = append(errs, fmt.Errorf("%s: its rule gives no role access", full))
			}
		}
		for _, full := range slices.Sorted(maps.Keys(t)) {
			if strings.HasPrefix(full, "/"+name+"/") && !methods[full] {
				errs = append(errs, fmt.Errorf("the method table has a rule for %s, which %s does not have", full, name))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("authorization: %w", errors.Join(errs...))
	}
	return nil
}
