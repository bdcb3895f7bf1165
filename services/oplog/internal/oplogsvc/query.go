package oplogsvc

import (
	"context"
	"encoding/binary"
	"sort"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/stats"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// Windows of the query RPCs.
const (
	listDefaultRange = 7 * 24 * time.Hour
	listMaxRange     = 92 * 24 * time.Hour
	statsMaxWindow   = 731 * 24 * time.Hour
	hourSeriesMax    = 92 * 24 * time.Hour
)

// ListOperationLogs returns logs matching the filter, newest first.
func (s *Server) ListOperationLogs(ctx context.Context, req *oplogv1.ListOperationLogsRequest) (*oplogv1.ListOperationLogsResponse, error) {
	f, err := s.parseList(req)
	if err != nil {
		return nil, err
	}
	rows, next, err := pagetoken.Page(f.Limit,
		func(limit int) ([]store.LogRow, error) {
			f.Limit = limit
			return s.store.ListLogs(ctx, f)
		},
		func(last store.LogRow) (string, error) {
			c := listCursor{since: f.Since, until: f.Until, time: last.CreateTime, id: last.ID}
			return s.tokens.EncodeFor(req, c.encode())
		})
	if err != nil {
		return nil, err
	}
	missing, err := s.store.MissingMonths(ctx, f.Since, f.Until, f.IncludeArchived)
	if err != nil {
		return nil, err
	}
	resp := &oplogv1.ListOperationLogsResponse{NextPageToken: next, MissingMonths: missing}
	for i := range rows {
		resp.OperationLogs = append(resp.OperationLogs, logProto(&rows[i]))
	}
	return resp, nil
}

func (s *Server) parseList(req *oplogv1.ListOperationLogsRequest) (store.LogFilter, error) {
	var v apierr.Violations
	f := store.LogFilter{Limit: validate.PageSize(&v, "page_size", req.GetPageSize()), IncludeArchived: req.GetIncludeArchived()}
	if req.GetUserId() != "" {
		if id, ok := validate.UUID(&v, "user_id", req.GetUserId()); ok {
			raw := [16]byte(id)
			f.UserID = &raw
		}
	}
	if validate.Identifier.Check(&v, "platform_account_id", req.GetPlatformAccountId()) {
		f.AccountID = req.GetPlatformAccountId()
	}
	if validate.Enum(&v, "operation_type", req.GetOperationType(), false) {
		f.OperationType = int16(req.GetOperationType())
	}
	if validate.Enum(&v, "outcome", req.GetOutcome(), false) {
		f.Outcome = int16(req.GetOutcome())
	}
	if validate.Code.Check(&v, "error_type", req.GetErrorType()) {
		f.ErrorType = req.GetErrorType()
	}
	if validate.Identifier.Check(&v, "proxy_used", req.GetProxyUsed()) {
		f.ProxyUsed = req.GetProxyUsed()
	}
	if tok := req.GetPageToken(); tok != "" {
		// The window and the position both come from the first page, so
		// a default window does not slide between pages.
		c, ok := s.listToken(req, tok)
		if !ok {
			v.Add("page_token", pagetoken.ErrInvalid.Error())
		}
		f.Since, f.Until, f.BeforeTime, f.BeforeID = c.since, c.until, c.time, c.id
		return f, v.Err()
	}
	f.Until = s.now()
	if req.GetUntil() != nil {
		f.Until, _ = validate.Timestamp(&v, "until", req.GetUntil())
		f.Until = earliest(f.Until, s.latestRow())
	}
	f.Since = f.Until.Add(-listDefaultRange)
	if req.GetSince() != nil {
		f.Since, _ = validate.Timestamp(&v, "since", req.GetSince())
	}
	checkWindow(&v, f.Since, f.Until, listMaxRange)
	return f, v.Err()
}

// listToken reads a page token of ListOperationLogs. The MAC proves the
// server made it for this filter; its window is checked again as the first
// page checked the request's all the same: since before until, at most
// listMaxRange long, ending no later than the newest possible row; since
// as the request gives it (else until minus the default range), until no
// later than the request's. The position lies in the window.
func (s *Server) listToken(req *oplogv1.ListOperationLogsRequest, token string) (listCursor, bool) {
	raw, err := s.tokens.DecodeFor(req, token)
	if err != nil {
		return listCursor{}, false
	}
	c, ok := decodeListCursor(raw)
	switch {
	case !ok,
		!c.since.Before(c.until),
		c.until.Sub(c.since) > listMaxRange,
		c.until.After(s.latestRow()),
		c.time.Before(c.since) || c.time.After(c.until):
		return listCursor{}, false
	}
	// The token holds microseconds, as the database does.
	if since := req.GetSince(); since != nil {
		ok = c.since.UnixMicro() == since.AsTime().UnixMicro()
	} else {
		ok = c.until.Sub(c.since) == listDefaultRange
	}
	if until := req.GetUntil(); until != nil && c.until.After(until.AsTime()) {
		ok = false
	}
	if !ok {
		return listCursor{}, false
	}
	return c, true
}

// latestRow is the newest create_time Ingest accepts now: windows end
// there at the latest.
func (s *Server) latestRow() time.Time { return s.now().Add(futureSkew) }

func earliest(a, b time.Time) time.Time {
	if a.After(b) {
		return b
	}
	return a
}

// checkWindow records what is wrong with [since, until) for a maximum
// span of max.
func checkWindow(v *apierr.Violations, since, until time.Time, max time.Duration) {
	switch {
	case !since.Before(until):
		v.Add("since", "must be before until")
	case until.Sub(since) > max:
		v.Addf("since", "the window may span at most %d days", int(max/(24*time.Hour)))
	}
}

// listCursor is the window of the first page and the last row shown.
type listCursor struct {
	since, until, time time.Time
	id                 [16]byte
}

func (c listCursor) encode() []byte {
	b := make([]byte, 0, 40)
	for _, t := range []time.Time{c.since, c.until, c.time} {
		b = binary.BigEndian.AppendUint64(b, uint64(t.UnixMicro()))
	}
	return append(b, c.id[:]...)
}

// decodeListCursor reads what encode wrote; listToken checks it.
func decodeListCursor(b []byte) (listCursor, bool) {
	var c listCursor
	if len(b) != 3*8+16 {
		return c, false
	}
	at := func(i int) time.Time { return time.UnixMicro(int64(binary.BigEndian.Uint64(b[i*8:]))).UTC() }
	c.since, c.until, c.time = at(0), at(1), at(2)
	copy(c.id[:], b[24:])
	return c, true
}

func logProto(l *store.LogRow) *oplogv1.OperationLog {
	out := &oplogv1.OperationLog{
		Id:                uuid.UUID(l.ID).String(),
		UserId:            uuid.UUID(l.UserID).String(),
		PlatformAccountId: l.PlatformAccountID,
		OperationType:     oplogv1.OperationType(l.OperationType),
		ResourceId:        l.ResourceID,
		Outcome:           commonv1.Outcome(l.Outcome),
		ErrorCode:         l.ErrorCode,
		ErrorType:         l.ErrorType,
		ErrorMessage:      l.ErrorMessage,
		ExecutionTimeMs:   l.ExecutionTimeMs,
		RetryCount:        l.RetryCount,
		AuthTypeDetected:  commonv1.AuthType(l.AuthTypeDetected),
		SessionRefreshed:  l.SessionRefreshed,
		ProxyUsed:         l.ProxyUsed,
		UserAgent:         l.UserAgent,
		RequestPayload:    jsonStruct(l.RequestPayload),
		ResponseSummary:   jsonStruct(l.ResponseSummary),
		TraceId:           l.TraceID,
		SpanId:            l.SpanID,
		CreateTime:        timestamppb.New(l.CreateTime),
	}
	return out
}

// jsonStruct reads a stored payload; the server wrote it from a Struct, so
// it always reads back.
func jsonStruct(b []byte) *structpb.Struct {
	if b == nil {
		return nil
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"unreadable": structpb.NewStringValue(err.Error())}}
	}
	return s
}

// statsWindow validates [since, until), ends it no later than latest (no
// row is newer) and widens it to whole buckets. Ending it at latest keeps
// the answer's until a valid Timestamp: a window asked to end in year 9999
// would otherwise be widened past the end of the type's range.
func statsWindow(v *apierr.Violations, since, until *timestamppb.Timestamp, bucket, max time.Duration, latest time.Time) store.Window {
	s, okSince := validate.Timestamp(v, "since", since)
	u, okUntil := validate.Timestamp(v, "until", until)
	if !okSince || !okUntil {
		return store.Window{}
	}
	if s.After(latest) {
		v.Add("since", "in the future: no row is newer than the server's clock plus "+futureSkew.String())
		return store.Window{}
	}
	u = earliest(u, latest)
	checkWindow(v, s, u, max)
	w := store.Window{Since: s.UTC().Truncate(bucket), Until: u.UTC().Truncate(bucket)}
	if w.Until.Before(u) {
		w.Until = w.Until.Add(bucket)
	}
	return w
}

// GetOperationStats summarises each operation type over the window.
func (s *Server) GetOperationStats(ctx context.Context, req *oplogv1.GetOperationStatsRequest) (*oplogv1.GetOperationStatsResponse, error) {
	var v apierr.Violations
	w := statsWindow(&v, req.GetSince(), req.GetUntil(), time.Hour, statsMaxWindow, s.latestRow())
	validate.Enum(&v, "operation_type", req.GetOperationType(), false)
	if err := v.Err(); err != nil {
		return nil, err
	}
	rows, err := s.store.OperationStats(ctx, w, int16(req.GetOperationType()))
	if err != nil {
		return nil, err
	}
	return &oplogv1.GetOperationStatsResponse{
		Stats: operationStats(rows),
		Since: timestamppb.New(w.Since),
		Until: timestamppb.New(w.Until),
	}, nil
}

// operationStats folds roll-up sums into one entry per operation type:
// success rate, failures per error type (most frequent first) and latency
// percentiles over all of its outcomes.
func operationStats(rows []store.OpStats) []*oplogv1.OperationStats {
	byType := map[int16]*oplogv1.OperationStats{}
	hist := map[int16][]int64{}
	errs := map[int16]map[string]int64{}
	for _, r := range rows {
		st := byType[r.OperationType]
		if st == nil {
			st = &oplogv1.OperationStats{OperationType: oplogv1.OperationType(r.OperationType)}
			byType[r.OperationType] = st
			errs[r.OperationType] = map[string]int64{}
		}
		st.Total += r.Total
		if r.Outcome == int16(commonv1.Outcome_OUTCOME_SUCCESS) {
			st.SuccessCount += r.Total
		} else {
			errs[r.OperationType][r.ErrorType] += r.Total
		}
		hist[r.OperationType] = stats.Add(hist[r.OperationType], r.Histogram)
	}
	out := make([]*oplogv1.OperationStats, 0, len(byType))
	for op, st := range byType {
		if st.Total > 0 {
			st.SuccessRate = float64(st.SuccessCount) / float64(st.Total)
		}
		for t, n := range errs[op] {
			st.Errors = append(st.Errors, &oplogv1.ErrorTypeCount{ErrorType: t, Count: n})
		}
		sort.Slice(st.Errors, func(i, j int) bool {
			a, b := st.Errors[i], st.Errors[j]
			return a.GetCount() > b.GetCount() || (a.GetCount() == b.GetCount() && a.GetErrorType() < b.GetErrorType())
		})
		st.P50ExecutionTimeMs = stats.Percentile(hist[op], 0.50)
		st.P95ExecutionTimeMs = stats.Percentile(hist[op], 0.95)
		st.P99ExecutionTimeMs = stats.Percentile(hist[op], 0.99)
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetOperationType() < out[j].GetOperationType() })
	return out
}

// GetProxyStats summarises each proxy over the window.
func (s *Server) GetProxyStats(ctx context.Context, req *oplogv1.GetProxyStatsRequest) (*oplogv1.GetProxyStatsResponse, error) {
	var v apierr.Violations
	w := statsWindow(&v, req.GetSince(), req.GetUntil(), time.Hour, statsMaxWindow, s.latestRow())
	if err := v.Err(); err != nil {
		return nil, err
	}
	rows, err := s.store.ProxyStatsOf(ctx, w)
	if err != nil {
		return nil, err
	}
	type acc struct{ total, success, execCount, execSum int64 }
	byProxy := map[string]*acc{}
	for _, r := range rows {
		a := byProxy[r.ProxyUsed]
		if a == nil {
			a = &acc{}
			byProxy[r.ProxyUsed] = a
		}
		a.total += r.Total
		if r.Outcome == int16(commonv1.Outcome_OUTCOME_SUCCESS) {
			a.success += r.Total
		}
		a.execCount += r.ExecutionCount
		a.execSum += r.ExecutionSum
	}
	resp := &oplogv1.GetProxyStatsResponse{Since: timestamppb.New(w.Since), Until: timestamppb.New(w.Until)}
	for proxy, a := range byProxy {
		p := &oplogv1.ProxyStats{ProxyUsed: proxy, Total: a.total, SuccessCount: a.success}
		if a.total > 0 {
			p.SuccessRate = float64(a.success) / float64(a.total)
		}
		if a.execCount > 0 {
			p.MeanExecutionTimeMs = float64(a.execSum) / float64(a.execCount)
		}
		resp.Proxies = append(resp.Proxies, p)
	}
	sort.Slice(resp.Proxies, func(i, j int) bool {
		a, b := resp.Proxies[i], resp.Proxies[j]
		return a.GetSuccessRate() > b.GetSuccessRate() || (a.GetSuccessRate() == b.GetSuccessRate() && a.GetProxyUsed() < b.GetProxyUsed())
	})
	return resp, nil
}

// GetFailureRateSeries returns failure rates per bucket and operation type.
func (s *Server) GetFailureRateSeries(ctx context.Context, req *oplogv1.GetFailureRateSeriesRequest) (*oplogv1.GetFailureRateSeriesResponse, error) {
	var v apierr.Violations
	bucket, max, daily := time.Hour, hourSeriesMax, false
	switch req.GetBucket() {
	case oplogv1.TimeBucket_TIME_BUCKET_HOUR:
	case oplogv1.TimeBucket_TIME_BUCKET_DAY:
		bucket, max, daily = 24*time.Hour, statsMaxWindow, true
	default:
		v.Add("bucket", "required: TIME_BUCKET_HOUR or TIME_BUCKET_DAY")
	}
	w := statsWindow(&v, req.GetSince(), req.GetUntil(), bucket, max, s.latestRow())
	validate.Enum(&v, "operation_type", req.GetOperationType(), false)
	if err := v.Err(); err != nil {
		return nil, err
	}
	points, err := s.store.FailureSeries(ctx, w, daily, int16(req.GetOperationType()))
	if err != nil {
		return nil, err
	}
	resp := &oplogv1.GetFailureRateSeriesResponse{
		Points: make([]*oplogv1.FailureRatePoint, 0, len(points)),
		Since:  timestamppb.New(w.Since),
		Until:  timestamppb.New(w.Until),
	}
	for _, p := range points {
		pt := &oplogv1.FailureRatePoint{
			BucketStart:   timestamppb.New(p.BucketStart),
			OperationType: oplogv1.OperationType(p.OperationType),
			Total:         p.Total,
			Failed:        p.Failed,
		}
		if p.Total > 0 {
			pt.FailureRate = float64(p.Failed) / float64(p.Total)
		}
		resp.Points = append(resp.Points, pt)
	}
	return resp, nil
}
