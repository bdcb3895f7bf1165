package auth_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/auth"
)

// The services of the platform's binaries, from the generated code: an RPC
// added to a .proto without a rule fails here (and the binary's start).
var platformServices = []*grpc.ServiceDesc{
	&oplogv1.OpLogService_ServiceDesc,
	&profilev1.ProfileService_ServiceDesc,
	&reviewmetav1.ReviewMetadataService_ServiceDesc,
	&healthgrpc.Health_ServiceDesc,
	&reflectionv1.ServerReflection_ServiceDesc,
	&reflectionv1alpha.ServerReflection_ServiceDesc,
}

// infoOf is what grpc.Server.GetServiceInfo says of servers registering
// descs.
func infoOf(descs ...*grpc.ServiceDesc) map[string]grpc.ServiceInfo {
	out := map[string]grpc.ServiceInfo{}
	for _, d := range descs {
		var info grpc.ServiceInfo
		for _, m := range d.Methods {
			info.Methods = append(info.Methods, grpc.MethodInfo{Name: m.MethodName})
		}
		for _, s := range d.Streams {
			info.Methods = append(info.Methods, grpc.MethodInfo{Name: s.StreamName, IsClientStream: s.ClientStreams, IsServerStream: s.ServerStreams})
		}
		out[d.ServiceName] = info
	}
	return out
}

func TestTheTableCoversEveryPlatformMethodAndNothingElse(t *testing.T) {
	t.Parallel()
	require.NoError(t, auth.Methods.Check(infoOf(platformServices...)))
	// Every rule belongs to one of these services: a rule for a service
	// no binary registers would never be checked at start.
	known := map[string]bool{}
	for _, d := range platformServices {
		known[d.ServiceName] = true
	}
	for method, rule := range auth.Methods {
		service := strings.Split(strings.TrimPrefix(method, "/"), "/")[0]
		assert.True(t, known[service], "%s: no platform service %s", method, service)
		assert.True(t, rule.Public || rule.Roles != 0, "%s gives nobody access", method)
		assert.Equal(t, rule.Public, rule.Class == auth.ClassNone, "%s: public methods and only they have no rate-limit class", method)
	}
	// Each binary registers one platform service: its check passes too.
	for _, d := range platformServices[:3] {
		assert.NoError(t, auth.Methods.Check(infoOf(d, &healthgrpc.Health_ServiceDesc, &reflectionv1.ServerReflection_ServiceDesc, &reflectionv1alpha.ServerReflection_ServiceDesc)), d.ServiceName)
	}
}

func TestCheckRefusesAMethodWithoutRuleAndARuleWithoutMethod(t *testing.T) {
	t.Parallel()
	err := auth.Methods.Check(infoOf(&testgrpc.TestService_ServiceDesc))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/grpc.testing.TestService/UnaryCall has no rule")
	assert.Contains(t, err.Error(), "/grpc.testing.TestService/FullDuplexCall has no rule", "every method is named at once")

	table := auth.Methods.With(auth.AllMethods(&testgrpc.TestService_ServiceDesc, auth.Rule{Roles: auth.Of(auth.Worker), Class: auth.ClassRead}))
	require.NoError(t, table.Check(infoOf(&testgrpc.TestService_ServiceDesc)))

	table = table.With(auth.Table{"/grpc.testing.TestService/Renamed": {Roles: auth.Of(auth.Admin), Class: auth.ClassAdmin}})
	err = table.Check(infoOf(&testgrpc.TestService_ServiceDesc))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a rule for /grpc.testing.TestService/Renamed, which grpc.testing.TestService does not have")

	table = auth.Methods.With(auth.AllMethods(&testgrpc.TestService_ServiceDesc, auth.Rule{Class: auth.ClassRead}))
	err = table.Check(infoOf(&testgrpc.TestService_ServiceDesc))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "its rule gives no role access")
}

// The table as the README shows it; a change to either must change both.
func TestTheTableIsTheDocumentedOne(t *testing.T) {
	t.Parallel()
	const (
		w = "worker"
		s = "service"
		o = "operator"
		a = "admin"
	)
	want := map[string][]string{
		"/platforma.oplog.v1.OpLogService/Ingest":                                  {w},
		"/platforma.oplog.v1.OpLogService/ListOperationLogs":                       {o, a},
		"/platforma.oplog.v1.OpLogService/GetOperationStats":                       {o, a},
		"/platforma.oplog.v1.OpLogService/GetProxyStats":                           {o, a},
		"/platforma.oplog.v1.OpLogService/GetFailureRateSeries":                    {o, a},
		"/platforma.oplog.v1.OpLogService/ListLoginDeadLetters":                    {a},
		"/platforma.oplog.v1.OpLogService/ReplayLoginDeadLetters":                  {a},
		"/platforma.profile.v1.ProfileService/RecordLoginResult":                   {w},
		"/platforma.profile.v1.ProfileService/BatchRecordLoginResults":             {w, s},
		"/platforma.profile.v1.ProfileService/GetProfile":                          {w, o, a},
		"/platforma.profile.v1.ProfileService/ListProfiles":                        {o, a},
		"/platforma.profile.v1.ProfileService/GetStabilityDistribution":            {o, a},
		"/platforma.profile.v1.ProfileService/WatchProfileChanges":                 {w, s, o, a},
		"/platforma.reviewmeta.v1.ReviewMetadataService/UpsertReviewMetadata":      {w},
		"/platforma.reviewmeta.v1.ReviewMetadataService/BatchUpsertReviewMetadata": {w},
		"/platforma.reviewmeta.v1.ReviewMetadataService/RecordReplyAttempt":        {w},
		"/platforma.reviewmeta.v1.ReviewMetadataService/GetReviewMetadata":         {w, o, a},
		"/platforma.reviewmeta.v1.ReviewMetadataService/ListReviewMetadata":        {w, o, a},
		"/platforma.reviewmeta.v1.ReviewMetadataService/GetReplyStats":             {o, a},
		"/grpc.health.v1.Health/Check":                                             nil,
		"/grpc.health.v1.Health/List":                                              nil,
		"/grpc.health.v1.Health/Watch":                                             nil,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":                nil,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo":           nil,
	}
	assert.Len(t, auth.Methods, len(want))
	for method, roles := range want {
		rule, ok := auth.Methods[method]
		if !assert.True(t, ok, method) {
			continue
		}
		if roles == nil {
			assert.True(t, rule.Public, "%s is public", method)
			continue
		}
		assert.Equal(t, roles, rule.Roles.Names(), method) // in the order worker, service, operator, admin
	}
	audited := []string{}
	for method, rule := range auth.Methods {
		if rule.Audit {
			audited = append(audited, method)
		}
	}
	assert.ElementsMatch(t, []string{
		"/platforma.oplog.v1.OpLogService/ListOperationLogs",
		"/platforma.oplog.v1.OpLogService/GetOperationStats",
		"/platforma.oplog.v1.OpLogService/GetProxyStats",
		"/platforma.oplog.v1.OpLogService/GetFailureRateSeries",
		"/platforma.oplog.v1.OpLogService/ListLoginDeadLetters",
		"/platforma.oplog.v1.OpLogService/ReplayLoginDeadLetters",
		"/platforma.profile.v1.ProfileService/GetProfile",
		"/platforma.profile.v1.ProfileService/ListProfiles",
		"/platforma.profile.v1.ProfileService/GetStabilityDistribution",
		"/platforma.profile.v1.ProfileService/WatchProfileChanges",
	}, audited, "operators' reads of the op log and the profiles are audited")
}
