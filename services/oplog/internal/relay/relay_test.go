package relay_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/oplog"
	"github.com/platforma/platforma/services/oplog/oplogclient"
	"github.com/platforma/platforma/services/profile"
)

// spans receives every span of this test binary: the services run
// in-process and share the global tracer provider, set before any of
// them starts.
var spans = tracetest.NewInMemoryExporter()

// No migrations in the template: each service runs its own migrate.
func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans), sdktrace.WithSampler(sdktrace.AlwaysSample())))
	pgtest.Main(m)
}

var (
	profileGRPC = profilev1.ProfileService_ServiceDesc.ServiceName
	oplogGRPC   = oplogv1.OpLogService_ServiceDesc.ServiceName
)

// relayFlags make the relay look often, so tests wait milliseconds.
func relayFlags(profileAddr string) []string {
	return []string{"-profile-addr=" + profileAddr, "-login-relay-interval=20ms"}
}

func startProfile(t *testing.T, flags ...string) *apptest.Service {
	return apptest.Start(t, profile.Service(), profileGRPC, flags...)
}

func startOpLog(t *testing.T, profileAddr string, flags ...string) *apptest.Service {
	return apptest.Start(t, oplog.Service(), oplogGRPC, append(relayFlags(profileAddr), flags...)...)
}

// login is a CHECK_LOGIN row of account.
func login(user, account string, success bool, at time.Time) *oplogv1.OperationLog {
	outcome := commonv1.Outcome_OUTCOME_FAILED
	if success {
		outcome = commonv1.Outcome_OUTCOME_SUCCESS
	}
	return &oplogv1.OperationLog{
		Id: uuid.Must(uuid.NewV7()).String(), UserId: user, PlatformAccountId: account,
		OperationType: oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN, Outcome: outcome,
		CreateTime: timestamppb.New(at),
	}
}

func ingest(t testing.TB, s *apptest.Service, logs ...*oplogv1.OperationLog) *oplogv1.IngestResponse {
	t.Helper()
	stream, err := oplogv1.NewOpLogServiceClient(s.Conn).Ingest(context.Background())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&oplogv1.IngestRequest{Logs: logs}))
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	return resp
}

func getProfile(t testing.TB, s *apptest.Service, user, account string) (*profilev1.Profile, error) {
	t.Helper()
	resp, err := profilev1.NewProfileServiceClient(s.Conn).GetProfile(context.Background(),
		&profilev1.GetProfileRequest{UserId: user, PlatformAccountId: account})
	return resp.GetProfile(), err
}

func outboxSize(t testing.TB, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT count(*) FROM oplog.login_outbox").Scan(&n))
	return n
}

func metric(t testing.TB, s *apptest.Service, series string) float64 {
	t.Helper()
	v, ok := apptest.MetricValue(apptest.Scrape(t.(*testing.T), s.MetricsAddr), series)
	require.True(t, ok, "%s not exported", series)
	return v
}

// eventually waits up to 20s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWorkerThatOnlyLogsMovesItsProfile(t *testing.T) {
	t.Parallel()
	prof := startProfile(t)
	op := startOpLog(t, prof.Addr)
	user, now := uuid.NewString(), time.Now()

	first := login(user, "acct-1", true, now.Add(-3*time.Minute))
	first.AuthTypeDetected = commonv1.AuthType_AUTH_TYPE_TWO_FACTOR
	validate := login(user, "acct-1", true, now.Add(-time.Minute))
	validate.OperationType = oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION
	noAccount := login(user, "", true, now)
	scrape := login(user, "acct-1", true, now)
	scrape.OperationType = oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS
	logs := []*oplogv1.OperationLog{first, login(user, "acct-1", false, now.Add(-2*time.Minute)), validate, noAccount, scrape}

	resp := ingest(t, op, logs...)
	require.Equal(t, int64(5), resp.GetAccepted())

	eventually(t, "the three logins of acct-1 reach its profile", func() bool {
		p, err := getProfile(t, prof, user, "acct-1")
		return err == nil && p.GetTotalLoginCount() == 3
	})
	p, err := getProfile(t, prof, user, "acct-1")
	require.NoError(t, err)
	assert.Equal(t, []int64{3, 2, 1}, []int64{p.GetTotalLoginCount(), p.GetSuccessLoginCount(), p.GetFailedLoginCount()})
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, p.GetAuthType(), "the detected auth type travels along")
	assert.Equal(t, validate.GetCreateTime().AsTime().Truncate(time.Microsecond), p.GetLastLoginAt().AsTime(),
		"occurred_at is the row's create_time")
	// The relay deletes right after ProfileService answers: the profile
	// can be seen moved a moment before the entries are gone.
	eventually(t, "delivered entries are removed", func() bool { return outboxSize(t, op.DatabaseURL) == 0 })
	assert.Equal(t, 3.0, metric(t, op, "platforma_login_outbox_delivered_total"))
	assert.Equal(t, 3.0, metric(t, prof, `platforma_logins_total{auth_type="UNSPECIFIED",outcome="SUCCESS"}`)+
		metric(t, prof, `platforma_logins_total{auth_type="TWO_FACTOR",outcome="SUCCESS"}`)+
		metric(t, prof, `platforma_logins_total{auth_type="UNSPECIFIED",outcome="FAILED"}`))

	// The worker's retry of the same stream stores nothing and forwards
	// nothing: the outbox is written only for new rows.
	again := ingest(t, op, logs...)
	assert.Equal(t, []int64{0, 5}, []int64{again.GetAccepted(), again.GetDuplicates()})
	assert.Equal(t, 0, outboxSize(t, op.DatabaseURL))
	time.Sleep(200 * time.Millisecond) // ten relay rounds
	assert.Equal(t, 3.0, metric(t, op, "platforma_login_outbox_delivered_total"))
	p, err = getProfile(t, prof, user, "acct-1")
	require.NoError(t, err)
	assert.Equal(t, int64(3), p.GetTotalLoginCount())
	_, err = getProfile(t, prof, user, "")
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "a login without account has no profile")
}

// freeAddr returns a local address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestLoginsWaitOutAProfileOutageAndAnOpLogRestart(t *testing.T) {
	t.Parallel()
	profileAddr := freeAddr(t)
	op := startOpLog(t, profileAddr)
	user, now := uuid.NewString(), time.Now()
	var logs []*oplogv1.OperationLog
	for i := 0; i < 50; i++ {
		logs = append(logs, login(user, fmt.Sprintf("acct-%d", i%5), i%3 != 0, now.Add(-time.Duration(i)*time.Second)))
	}
	require.Equal(t, int64(50), ingest(t, op, logs...).GetAccepted(), "the log accepts logins while ProfileService is down")
	assert.Equal(t, 50, outboxSize(t, op.DatabaseURL))
	eventually(t, "the relay reports failed deliveries", func() bool {
		return metric(t, op, "platforma_login_outbox_delivery_errors_total") > 0
	})
	assert.Equal(t, 50.0, metric(t, op, "platforma_login_outbox_backlog"))
	assert.Greater(t, metric(t, op, "platforma_login_outbox_oldest_age_seconds"), 0.0)

	// OpLogService restarts with the backlog; then ProfileService comes up.
	op.Stop()
	op = apptest.Run(t, oplog.Service(), op.DatabaseURL, oplogGRPC, relayFlags(profileAddr)...)
	prof := startProfile(t, "-listen-addr="+profileAddr)

	eventually(t, "the backlog is delivered", func() bool { return outboxSize(t, op.DatabaseURL) == 0 })
	for i := 0; i < 5; i++ {
		p, err := getProfile(t, prof, user, fmt.Sprintf("acct-%d", i))
		require.NoError(t, err)
		assert.Equal(t, int64(10), p.GetTotalLoginCount(), "acct-%d: every login once", i)
	}
}

// Two replicas share the outbox: one delivers, the other stands by and
// takes over when the first stops; every login is counted exactly once.
func TestReplicasDeliverEachLoginOnce(t *testing.T) {
	t.Parallel()
	prof := startProfile(t)
	a := startOpLog(t, prof.Addr)
	b := apptest.Run(t, oplog.Service(), a.DatabaseURL, oplogGRPC, relayFlags(prof.Addr)...)
	user, now := uuid.NewString(), time.Now()
	accounts := []string{"acct-a", "acct-b", "acct-c", "acct-d"}

	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replica := []*apptest.Service{a, b}[g%2]
			for s := 0; s < 10; s++ {
				var logs []*oplogv1.OperationLog
				for i := 0; i < 25; i++ {
					logs = append(logs, login(user, accounts[(g+s+i)%4], i%4 != 0, now.Add(-time.Duration(g*1000+s*25+i)*time.Millisecond)))
				}
				ingest(t, replica, logs...)
				// The same stream again, to the other replica: duplicates.
				ingest(t, []*apptest.Service{a, b}[(g+1)%2], logs...)
			}
		}()
	}
	wg.Wait()
	const total = 8 * 10 * 25
	eventually(t, "every login is delivered", func() bool { return outboxSize(t, a.DatabaseURL) == 0 })
	sum := int64(0)
	for _, acct := range accounts {
		p, err := getProfile(t, prof, user, acct)
		require.NoError(t, err)
		sum += p.GetTotalLoginCount()
	}
	assert.Equal(t, int64(total), sum)
	da := metric(t, a, "platforma_login_outbox_delivered_total")
	db := metric(t, b, "platforma_login_outbox_delivered_total")
	assert.Equal(t, float64(total), da+db)
	assert.True(t, da == 0 || db == 0, "one replica delivers at a time (a: %v, b: %v)", da, db)

	leader, standby := a, b
	if db > 0 {
		leader, standby = b, a
	}
	leader.Stop()
	ingest(t, standby, login(user, "acct-a", true, now))
	eventually(t, "the standby takes over", func() bool { return outboxSize(t, a.DatabaseURL) == 0 })
	assert.Equal(t, 1.0, metric(t, standby, "platforma_login_outbox_delivered_total"))
}

// A relay that delivered and died before deleting resends; ProfileService
// recognises the event id (the log id) and counts nothing twice. A
// worker that also reports the login directly with the log id is
// harmless the same way.
func TestResentLoginIsNotCountedTwice(t *testing.T) {
	t.Parallel()
	prof := startProfile(t)
	op := startOpLog(t, prof.Addr)
	user := uuid.NewString()
	l := login(user, "acct-1", false, time.Now())
	_, err := profilev1.NewProfileServiceClient(prof.Conn).RecordLoginResult(context.Background(), &profilev1.RecordLoginResultRequest{
		EventId: l.GetId(), UserId: user, PlatformAccountId: "acct-1", Outcome: commonv1.Outcome_OUTCOME_FAILED, OccurredAt: l.GetCreateTime(),
	})
	require.NoError(t, err)

	ingest(t, op, l)
	eventually(t, "the outbox entry is delivered", func() bool { return outboxSize(t, op.DatabaseURL) == 0 })
	p, err := getProfile(t, prof, user, "acct-1")
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.GetTotalLoginCount())
	assert.Equal(t, 1.0, metric(t, prof, `platforma_logins_total{auth_type="UNSPECIFIED",outcome="FAILED"}`))
}

// What ProfileService refuses for good leaves the outbox without holding
// up the logins behind it, and is kept as a dead letter that an operator
// lists and, once the cause is fixed, replays.
func TestRefusedLoginIsKeptAsADeadLetterAndReplayable(t *testing.T) {
	t.Parallel()
	profileAddr := freeAddr(t)
	prof := startProfile(t, "-listen-addr="+profileAddr, "-max-event-age=1h")
	op := startOpLog(t, profileAddr)
	user := uuid.NewString()
	old := login(user, "old", true, time.Now().Add(-2*time.Hour))
	ingest(t, op, old, login(user, "new", true, time.Now()))

	eventually(t, "the outbox empties", func() bool { return outboxSize(t, op.DatabaseURL) == 0 })
	assert.Equal(t, 1.0, metric(t, op, `platforma_login_outbox_dead_lettered_total{reason="EVENT_TOO_OLD"}`), "counted by its reason")
	assert.Equal(t, 0.0, metric(t, op, `platforma_login_outbox_dead_lettered_total{reason="InvalidArgument"}`))
	assert.Equal(t, 0.0, metric(t, op, `platforma_login_outbox_dead_lettered_total{reason="FailedPrecondition"}`), "every reason exported from the start")
	assert.Equal(t, 0.0, metric(t, op, `platforma_login_outbox_dead_lettered_total{reason="EVENT_ID_CONFLICT"}`), "every reason exported from the start")
	assert.Equal(t, 1.0, metric(t, op, "platforma_login_outbox_delivered_total"))
	eventually(t, "the dead letter gauge reads 1", func() bool { return metric(t, op, "platforma_login_dead_letters") == 1 })
	_, err := getProfile(t, prof, user, "old")
	assert.Equal(t, codes.NotFound, status.Code(err))

	client := oplogv1.NewOpLogServiceClient(op.Conn)
	list, err := client.ListLoginDeadLetters(context.Background(), &oplogv1.ListLoginDeadLettersRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetLoginDeadLetters(), 1)
	dl := list.GetLoginDeadLetters()[0]
	assert.Equal(t, old.GetId(), dl.GetEventId())
	assert.Equal(t, "old", dl.GetPlatformAccountId())
	assert.Equal(t, commonv1.Outcome_OUTCOME_SUCCESS, dl.GetOutcome())
	assert.True(t, dl.GetOccurredAt().AsTime().Equal(old.GetCreateTime().AsTime().Truncate(time.Microsecond)))
	assert.Equal(t, "InvalidArgument", dl.GetCode())
	assert.Equal(t, "EVENT_TOO_OLD", dl.GetErrorReason(), "the reason the relay decided on")
	assert.Contains(t, dl.GetReason(), "older than 1h0m0s")
	assert.Empty(t, list.GetNextPageToken())

	// The operator widens ProfileService's window and replays.
	prof.Stop()
	prof = apptest.Run(t, profile.Service(), prof.DatabaseURL, profileGRPC, "-listen-addr="+profileAddr)
	replay, err := client.ReplayLoginDeadLetters(context.Background(), &oplogv1.ReplayLoginDeadLettersRequest{All: true})
	require.NoError(t, err)
	assert.Equal(t, int64(1), replay.GetReplayed())
	eventually(t, "the replayed login reaches its profile", func() bool {
		p, err := getProfile(t, prof, user, "old")
		return err == nil && p.GetTotalLoginCount() == 1
	})
	list, err = client.ListLoginDeadLetters(context.Background(), &oplogv1.ListLoginDeadLettersRequest{})
	require.NoError(t, err)
	assert.Empty(t, list.GetLoginDeadLetters())
	again, err := client.ReplayLoginDeadLetters(context.Background(), &oplogv1.ReplayLoginDeadLettersRequest{EventIds: []string{old.GetId()}})
	require.NoError(t, err)
	assert.Zero(t, again.GetReplayed(), "a delivered outcome is no dead letter any more")
}

func TestDeadLetterRequestsAreValidated(t *testing.T) {
	t.Parallel()
	op := apptest.Start(t, oplog.Service(), oplogGRPC)
	client := oplogv1.NewOpLogServiceClient(op.Conn)
	for _, tt := range []struct {
		req   *oplogv1.ReplayLoginDeadLettersRequest
		field string
	}{
		{&oplogv1.ReplayLoginDeadLettersRequest{}, "event_ids"},
		{&oplogv1.ReplayLoginDeadLettersRequest{All: true, EventIds: []string{uuid.NewString()}}, "event_ids"},
		{&oplogv1.ReplayLoginDeadLettersRequest{EventIds: []string{uuid.NewString(), "nope"}}, "event_ids[1]"},
	} {
		_, err := client.ReplayLoginDeadLetters(context.Background(), tt.req)
		assert.Equal(t, []string{tt.field}, apptest.ViolatedFields(t, err))
	}
	_, err := client.ListLoginDeadLetters(context.Background(), &oplogv1.ListLoginDeadLettersRequest{PageToken: "forged"})
	assert.Equal(t, []string{"page_token"}, apptest.ViolatedFields(t, err))
}

// ProfileService refuses accounts with surrounding whitespace; Ingest
// refuses them too, row by row, so no acknowledged login can be refused
// later on its way to a profile.
func TestLoginThatProfilesWouldRefuseIsRefusedAtIngest(t *testing.T) {
	t.Parallel()
	prof := startProfile(t)
	op := startOpLog(t, prof.Addr)
	user := uuid.NewString()
	resp := ingest(t, op,
		login(user, " padded", true, time.Now()),
		login(user, "nbsp\u00a0", true, time.Now()),
		login(user, "   ", true, time.Now()),
		login(user, "fine", true, time.Now()))
	assert.Equal(t, int64(1), resp.GetAccepted())
	require.Len(t, resp.GetRejected(), 3)
	for i, r := range resp.GetRejected() {
		assert.Equal(t, int64(i), r.GetIndex())
		assert.Equal(t, "platform_account_id", r.GetField())
	}
	eventually(t, "the accepted login is delivered", func() bool { return outboxSize(t, op.DatabaseURL) == 0 })
	p, err := getProfile(t, prof, user, "fine")
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.GetTotalLoginCount())
	assert.Equal(t, 0.0, metric(t, op, `platforma_login_outbox_dead_lettered_total{reason="InvalidArgument"}`))
}

func TestWithoutProfileAddrNothingIsForwarded(t *testing.T) {
	t.Parallel()
	op := apptest.Start(t, oplog.Service(), oplogGRPC)
	ingest(t, op, login(uuid.NewString(), "acct-1", true, time.Now()))
	assert.Equal(t, 0, outboxSize(t, op.DatabaseURL))
	_, exported := apptest.MetricValue(apptest.Scrape(t, op.MetricsAddr), "platforma_login_outbox_backlog")
	assert.False(t, exported, "no relay, no relay metrics")
}

// The trace of one worker operation, end to end: the worker's span, the
// SDK's flush, Ingest on both sides, the commit and its database calls in
// one trace; the relay's delivery in its own trace, linked to the
// worker's span, continuing into ProfileService and its database calls.
func TestTraceFromWorkerThroughIngestAndRelayIntoProfiles(t *testing.T) {
	t.Parallel()
	prof := startProfile(t)
	op := startOpLog(t, prof.Addr)
	conn, err := oplogclient.Dial(op.Addr, op.DialOptions()...)
	require.NoError(t, err)
	defer conn.Close()
	client, err := oplogclient.New(conn, oplogclient.WithLinger(10*time.Millisecond))
	require.NoError(t, err)

	user := uuid.NewString()
	ctx, worker := otel.Tracer("worker").Start(context.Background(), "worker: check login")
	client.Log(ctx, oplogclient.Entry{
		UserID: user, PlatformAccountID: "acct-1",
		OperationType: oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN, Outcome: commonv1.Outcome_OUTCOME_SUCCESS,
	})
	worker.End()
	require.NoError(t, client.Close(context.Background()))
	eventually(t, "the login reaches the profile", func() bool {
		p, err := getProfile(t, prof, user, "acct-1")
		return err == nil && p.GetTotalLoginCount() == 1
	})
	var deliver tracetest.SpanStub
	eventually(t, "the relay's span linked to the worker's is exported", func() bool {
		for _, s := range spans.GetSpans() {
			for _, l := range s.Links {
				if s.Name == "oplog.login_relay.deliver" && l.SpanContext.TraceID() == worker.SpanContext().TraceID() &&
					l.SpanContext.SpanID() == worker.SpanContext().SpanID() {
					deliver = s
					return true
				}
			}
		}
		return false
	})

	// The worker's trace.
	all := spans.GetSpans()
	tr := traceOf(all, worker.SpanContext().TraceID())
	flush := tr.child(t, worker.SpanContext().SpanID(), "oplogclient.flush", trace.SpanKindProducer)
	call := tr.child(t, flush.SpanContext.SpanID(), "platforma.oplog.v1.OpLogService/Ingest", trace.SpanKindClient)
	handle := tr.child(t, call.SpanContext.SpanID(), "platforma.oplog.v1.OpLogService/Ingest", trace.SpanKindServer)
	commit := tr.child(t, handle.SpanContext.SpanID(), "oplog.ingest.commit", trace.SpanKindInternal)
	tr.child(t, commit.SpanContext.SpanID(), "copy_from oplog.operation_logs", trace.SpanKindClient)
	for _, statement := range []string{"BEGIN", "batch start", "COMMIT"} {
		assert.NotEmpty(t, tr.childrenNamed(commit.SpanContext.SpanID(), statement), "otelpgx span %q under the commit", statement)
	}
	t.Logf("worker's trace:\n%s", tr.render(worker.SpanContext().SpanID(), "worker: check login"))

	// The relay's trace.
	rt := traceOf(all, deliver.SpanContext.TraceID())
	assert.NotEqual(t, worker.SpanContext().TraceID(), deliver.SpanContext.TraceID(), "the relay runs in its own trace")
	relayCall := rt.child(t, deliver.SpanContext.SpanID(), "platforma.profile.v1.ProfileService/BatchRecordLoginResults", trace.SpanKindClient)
	relayHandle := rt.child(t, relayCall.SpanContext.SpanID(), "platforma.profile.v1.ProfileService/BatchRecordLoginResults", trace.SpanKindServer)
	assert.NotEmpty(t, rt.childrenNamed(relayHandle.SpanContext.SpanID(), "batch start"), "ProfileService's database spans under its handler")
	assert.NotEmpty(t, rt.childrenNamed(deliver.SpanContext.SpanID(), "WITH"), "the relay removes what it delivered within its span")
	t.Logf("relay's trace (linked to %s):\n%s", worker.SpanContext().SpanID(), rt.render(deliver.SpanContext.SpanID(), deliver.Name))

	// The stored row keeps the worker's trace and span ids.
	logs, err := oplogv1.NewOpLogServiceClient(op.Conn).ListOperationLogs(context.Background(), &oplogv1.ListOperationLogsRequest{UserId: user})
	require.NoError(t, err)
	require.Len(t, logs.GetOperationLogs(), 1)
	assert.Equal(t, worker.SpanContext().TraceID().String(), logs.GetOperationLogs()[0].GetTraceId())
	assert.Equal(t, worker.SpanContext().SpanID().String(), logs.GetOperationLogs()[0].GetSpanId())
}

// spanTree is the spans of one trace.
type spanTree []tracetest.SpanStub

func traceOf(all tracetest.SpanStubs, id trace.TraceID) spanTree {
	var out spanTree
	for _, s := range all {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

// child finds the one span named name of kind under parent.
func (tr spanTree) child(t *testing.T, parent trace.SpanID, name string, kind trace.SpanKind) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range tr {
		if s.Parent.SpanID() == parent && s.Name == name && s.SpanKind == kind {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "one %s span %q under %s", kind, name, parent)
	return found[0]
}

func (tr spanTree) childrenNamed(parent trace.SpanID, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range tr {
		if s.Parent.SpanID() == parent && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// render draws the tree under root, children in start order.
func (tr spanTree) render(root trace.SpanID, rootName string) string {
	sorted := slices.Clone(tr)
	slices.SortFunc(sorted, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	var b strings.Builder
	var walk func(id trace.SpanID, name string, depth int)
	walk = func(id trace.SpanID, name string, depth int) {
		fmt.Fprintf(&b, "%s%s\n", strings.Repeat("  ", depth), name)
		for _, s := range sorted {
			if s.Parent.SpanID() == id {
				walk(s.SpanContext.SpanID(), fmt.Sprintf("%s [%s]", s.Name, s.SpanKind), depth+1)
			}
		}
	}
	walk(root, rootName, 0)
	return b.String()
}
