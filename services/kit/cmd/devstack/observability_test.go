package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/auth/devpki"
)

// observabilityDir is deploy/observability, from this package's directory.
var observabilityDir = filepath.Join("..", "..", "..", "..", "deploy", "observability")

// stackDialOption dials the stack whose data directory is dataDir as its
// worker.
func stackDialOption(dataDir string) (grpc.DialOption, error) {
	tlsDir := filepath.Join(dataDir, tlsDirName)
	creds := &stackCredentials{pki: &devpki.Files{
		CA:         filepath.Join(tlsDir, "ca.pem"),
		WorkerCert: filepath.Join(tlsDir, "worker.pem"),
		WorkerKey:  filepath.Join(tlsDir, "worker-key.pem"),
	}}
	return creds.workerDialOption()
}

// dialStack connects to a service of a running stack as its worker.
func dialStack(t *testing.T, dataDir, addr string) *grpc.ClientConn {
	t.Helper()
	opt, err := stackDialOption(dataDir)
	require.NoError(t, err, "the stack's worker credentials")
	conn, err := grpc.NewClient(addr, opt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// driveTraffic uses the stack as workers do: operations logged (a login
// among them, from a worker that calls nothing else), a rejected row, a
// review and a reply attempt. The login must reach its profile through
// the log alone.
func driveTraffic(t *testing.T, dataDir string, services []service) {
	ctx := context.Background()
	user, now := uuid.NewString(), timestamppb.Now()
	ms := func(v int64) *int64 { return &v }
	logs := []*oplogv1.OperationLog{
		{Id: uuid.NewString(), UserId: user, PlatformAccountId: "acct-1", OperationType: oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN,
			Outcome: commonv1.Outcome_OUTCOME_SUCCESS, AuthTypeDetected: commonv1.AuthType_AUTH_TYPE_NORMAL, ExecutionTimeMs: ms(2100), CreateTime: now},
		{Id: uuid.NewString(), UserId: user, PlatformAccountId: "acct-1", OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
			Outcome: commonv1.Outcome_OUTCOME_FAILED, ErrorType: "AUTH_REQUIRED", ProxyUsed: "proxy-1", ExecutionTimeMs: ms(800), RetryCount: 1, CreateTime: now},
		{Id: uuid.NewString(), UserId: user, PlatformAccountId: "acct-1", OperationType: oplogv1.OperationType_OPERATION_TYPE_ADD_REPLY,
			Outcome: commonv1.Outcome_OUTCOME_SUCCESS, ProxyUsed: "proxy-1", ExecutionTimeMs: ms(350), CreateTime: now},
		{Id: "not-a-uuid", UserId: user, OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_STORES, Outcome: commonv1.Outcome_OUTCOME_SUCCESS, CreateTime: now},
	}
	stream, err := oplogv1.NewOpLogServiceClient(dialStack(t, dataDir, services[2].addr)).Ingest(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&oplogv1.IngestRequest{Logs: logs}))
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	require.Equal(t, int64(3), resp.GetAccepted())

	profiles := profilev1.NewProfileServiceClient(dialStack(t, dataDir, services[0].addr))
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := profiles.GetProfile(ctx, &profilev1.GetProfileRequest{UserId: user, PlatformAccountId: "acct-1"})
		if err == nil {
			assert.Equal(t, int64(1), p.GetProfile().GetTotalLoginCount(), "the logged login moved the profile")
			assert.Equal(t, commonv1.AuthType_AUTH_TYPE_NORMAL, p.GetProfile().GetAuthType())
			break
		}
		require.False(t, time.Now().After(deadline), "the logged login never reached ProfileService: %v", err)
		time.Sleep(50 * time.Millisecond)
	}

	reviews := reviewmetav1.NewReviewMetadataServiceClient(dialStack(t, dataDir, services[1].addr))
	reviewID := uuid.NewString()
	_, err = reviews.UpsertReviewMetadata(ctx, &reviewmetav1.UpsertReviewMetadataRequest{ReviewMetadata: &reviewmetav1.ReviewMetadata{
		ReviewId: reviewID, ShopId: uuid.NewString(), HasBookingDetail: true, FetchedAt: now,
	}})
	require.NoError(t, err)
	_, err = reviews.RecordReplyAttempt(ctx, &reviewmetav1.RecordReplyAttemptRequest{ReviewId: reviewID, Success: true, AttemptedAt: now})
	require.NoError(t, err)
}

// metricName matches the series names in a PromQL expression.
var metricName = regexp.MustCompile(`\b(platforma_[a-z0-9_]+|grpc_server_[a-z0-9_]+)\b`)

// metricsUsed returns every platforma or gRPC series name that the alert
// rules and the dashboard query.
func metricsUsed(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	add := func(where, expr string) {
		for _, name := range metricName.FindAllString(expr, -1) {
			used[name] = append(used[name], where)
		}
	}

	raw, err := os.ReadFile(filepath.Join(observabilityDir, "alerts.yml"))
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &rules))
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			add("alert "+r.Alert, r.Expr)
		}
	}

	raw, err = os.ReadFile(filepath.Join(observabilityDir, "dashboard.json"))
	require.NoError(t, err)
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dashboard), "dashboard.json is valid JSON")
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			add("panel "+p.Title, target.Expr)
		}
	}
	require.Greater(t, len(used), 10, "the rules and the dashboard were read")
	return used
}

// checkDashboardMetricsExported scrapes the three services and checks
// that every series the alerts and the dashboard query exists.
func checkDashboardMetricsExported(t *testing.T, services []service) {
	exported := map[string]bool{}
	for _, s := range services {
		resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.NoError(t, err)
		for _, line := range strings.Split(string(body), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, _, _ := strings.Cut(line, "{")
			name, _, _ = strings.Cut(name, " ")
			exported[name] = true
		}
	}
	for name, where := range metricsUsed(t) {
		assert.True(t, exported[name], "%s (used by %s) is not exported by any service", name, strings.Join(where, ", "))
	}
}

// The dashboard's success rates are the expressions that alerts_test.yml
// checks against the first failures of a new error type (promql_expr_test),
// and the alert's ratio is the "Success rate" panel's: none of them can go
// back to series that miss those failures without a test failing.
func TestDashboardSuccessRatesAreUnitTested(t *testing.T) {
	t.Parallel()
	oneLine := func(expr string) string { return strings.Join(strings.Fields(expr), " ") }

	raw, err := os.ReadFile(filepath.Join(observabilityDir, "alerts_test.yml"))
	require.NoError(t, err)
	var tests struct {
		Tests []struct {
			ExprTests []struct {
				Expr string `yaml:"expr"`
			} `yaml:"promql_expr_test"`
		} `yaml:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &tests))
	tested := map[string]bool{}
	for _, group := range tests.Tests {
		for _, e := range group.ExprTests {
			tested[oneLine(e.Expr)] = true
		}
	}

	raw, err = os.ReadFile(filepath.Join(observabilityDir, "dashboard.json"))
	require.NoError(t, err)
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dashboard))
	panels := map[string]string{}
	for _, p := range dashboard.Panels {
		if len(p.Targets) == 1 {
			panels[p.Title] = oneLine(p.Targets[0].Expr)
		}
	}
	for _, title := range []string{"Success rate", "Success rate by operation type"} {
		require.Contains(t, panels, title)
		assert.True(t, tested[panels[title]], "panel %q: its expression %s is not checked by a promql_expr_test in alerts_test.yml", title, panels[title])
	}

	raw, err = os.ReadFile(filepath.Join(observabilityDir, "alerts.yml"))
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &rules))
	found := false
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "PlatformaLowSuccessRate" {
				found = true
				assert.Equal(t, panels["Success rate"]+" < 0.9", oneLine(r.Expr), "the alert reads the panel's ratio")
			}
		}
	}
	assert.True(t, found, "alert PlatformaLowSuccessRate exists")
}
