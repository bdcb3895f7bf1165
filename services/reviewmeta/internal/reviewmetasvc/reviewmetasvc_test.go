package reviewmetasvc_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/reviewmeta/internal/reviewmetasvc"
)

func TestMain(m *testing.M) { pgtest.Main(m, migrations.ReviewMeta) }

func newClient(t *testing.T) (reviewmetav1.ReviewMetadataServiceClient, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.NewPool(t)
	conn := apptest.Serve(t, pool, func(r server.Registrar) error {
		return reviewmetasvc.Register(r, pool, reviewmetasvc.Config{PageTokens: apptest.PageTokens()})
	})
	return reviewmetav1.NewReviewMetadataServiceClient(conn), pool
}

const (
	booking = reviewmetav1.ReviewType_REVIEW_TYPE_BOOKING
	receipt = reviewmetav1.ReviewType_REVIEW_TYPE_RECEIPT
	pickup  = reviewmetav1.ReviewType_REVIEW_TYPE_PICKUP
)

var base = time.Now().Add(-time.Hour).Truncate(time.Millisecond)

func review(shop uuid.UUID, fetched time.Time) *reviewmetav1.ReviewMetadata {
	return &reviewmetav1.ReviewMetadata{
		ReviewId:       uuid.NewString(),
		ShopId:         shop.String(),
		ExternalShopId: "ext-" + shop.String()[:8],
		FetchedAt:      timestamppb.New(fetched),
	}
}

func upsert(t *testing.T, client reviewmetav1.ReviewMetadataServiceClient, r *reviewmetav1.ReviewMetadata) *reviewmetav1.ReviewMetadata {
	t.Helper()
	resp, err := client.UpsertReviewMetadata(context.Background(), &reviewmetav1.UpsertReviewMetadataRequest{ReviewMetadata: r})
	require.NoError(t, err)
	return resp.GetReviewMetadata()
}

func attempt(t *testing.T, client reviewmetav1.ReviewMetadataServiceClient, reviewID string, success bool, errType string, at time.Time) *reviewmetav1.ReviewMetadata {
	t.Helper()
	resp, err := client.RecordReplyAttempt(context.Background(), &reviewmetav1.RecordReplyAttemptRequest{
		ReviewId: reviewID, Success: success, ErrorType: errType, AttemptedAt: timestamppb.New(at),
	})
	require.NoError(t, err)
	return resp.GetReviewMetadata()
}

func TestUpsertStoresAndDerivesTheType(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	shop := uuid.New()
	for _, tc := range []struct {
		source  string
		booking bool
		given   reviewmetav1.ReviewType
		want    reviewmetav1.ReviewType
	}{
		{"PICKUP", true, 0, pickup},
		{"STORE", true, 0, booking},
		{"", false, 0, receipt},
		{"PICKUP", false, booking, booking},
	} {
		r := review(shop, base)
		r.Source, r.HasBookingDetail, r.ReviewType = tc.source, tc.booking, tc.given
		r.ExternalBusinessId = "biz-1"
		got := upsert(t, client, r)
		assert.Equal(t, tc.want, got.GetReviewType(), "%+v", tc)
		assert.Equal(t, r.GetReviewId(), got.GetReviewId())
		assert.Equal(t, shop.String(), got.GetShopId())
		assert.Equal(t, r.GetExternalShopId(), got.GetExternalShopId())
		assert.Equal(t, "biz-1", got.GetExternalBusinessId())
		assert.Equal(t, tc.source, got.GetSource())
		assert.NotEmpty(t, got.GetId())
		assert.True(t, got.GetFetchedAt().AsTime().Equal(base))
		assert.Equal(t, reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED, got.GetReplyState())
		assert.False(t, got.GetReplyAttempted())
	}
}

func TestSamePageFromConcurrentScrapersKeepsTheNewestData(t *testing.T) {
	t.Parallel()
	client, pool := newClient(t)
	shop := uuid.New()
	const pageSize, scrapers = 100, 8
	ids := make([]string, pageSize)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	// Scraper c fetched the page at base+c minutes; its data says so.
	page := func(c int) []*reviewmetav1.ReviewMetadata {
		items := make([]*reviewmetav1.ReviewMetadata, pageSize)
		for i, id := range ids {
			items[i] = &reviewmetav1.ReviewMetadata{
				ReviewId:           id,
				ShopId:             shop.String(),
				ExternalBusinessId: fmt.Sprintf("scraper-%d", c),
				HasBookingDetail:   c%2 == 1,
				FetchedAt:          timestamppb.New(base.Add(time.Duration(c) * time.Minute)),
			}
		}
		return items
	}
	var wg sync.WaitGroup
	for round := 0; round < 2; round++ { // each scraper sends its page twice
		for c := 0; c < scrapers; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := client.BatchUpsertReviewMetadata(context.Background(), &reviewmetav1.BatchUpsertReviewMetadataRequest{Items: page(c)})
				assert.NoError(t, err)
			}()
		}
	}
	wg.Wait()

	var rows int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM reviewmeta.review_metadata`).Scan(&rows))
	assert.Equal(t, pageSize, rows, "one row per review")
	for _, id := range ids {
		got, err := client.GetReviewMetadata(context.Background(), &reviewmetav1.GetReviewMetadataRequest{ReviewId: id})
		require.NoError(t, err)
		r := got.GetReviewMetadata()
		assert.Equal(t, "scraper-7", r.GetExternalBusinessId(), "the newest fetch wins")
		assert.True(t, r.GetFetchedAt().AsTime().Equal(base.Add(7*time.Minute)))
		assert.Equal(t, booking, r.GetReviewType(), "derived from the newest data")
	}
}

func TestOlderFetchNeverOverwritesNewer(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	r := review(uuid.New(), base.Add(time.Minute))
	r.Source = "NEW"
	upsert(t, client, r)
	older := proto.Clone(r).(*reviewmetav1.ReviewMetadata)
	older.Source, older.FetchedAt = "OLD", timestamppb.New(base)
	got := upsert(t, client, older)
	assert.Equal(t, "NEW", got.GetSource(), "the answer is the stored, newer data")
	assert.True(t, got.GetFetchedAt().AsTime().Equal(base.Add(time.Minute)))
}

func TestUpsertNeverResetsReplyState(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	r := review(uuid.New(), base)
	upsert(t, client, r)
	attempt(t, client, r.GetReviewId(), false, "SELECTOR_NOT_FOUND", base.Add(time.Minute))
	attempt(t, client, r.GetReviewId(), true, "", base.Add(2*time.Minute))

	// A re-scrape with newer data, even one that claims no reply was made.
	again := proto.Clone(r).(*reviewmetav1.ReviewMetadata)
	again.FetchedAt = timestamppb.New(base.Add(10 * time.Minute))
	again.ReplyAttempted, again.ReplySuccess, again.ReplyAttemptCount = false, false, 0
	got := upsert(t, client, again)
	assert.True(t, got.GetFetchedAt().AsTime().Equal(base.Add(10*time.Minute)))
	assert.True(t, got.GetReplyAttempted())
	assert.True(t, got.GetReplySuccess())
	assert.Equal(t, int32(2), got.GetReplyAttemptCount())
	assert.Equal(t, reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED, got.GetReplyState())
}

func TestReplyAttemptsCountExactlyUnderConcurrency(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	r := review(uuid.New(), base)
	upsert(t, client, r)
	const workers, each = 16, 40
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				k := i*workers + w
				// The newest attempt (k = 639) fails; attempts arrive out of order.
				_, err := client.RecordReplyAttempt(context.Background(), &reviewmetav1.RecordReplyAttemptRequest{
					ReviewId: r.GetReviewId(), Success: k != workers*each-1 && k%2 == 0, ErrorType: "TIMEOUT",
					AttemptedAt: timestamppb.New(base.Add(time.Duration(k) * time.Millisecond)),
				})
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	got, err := client.GetReviewMetadata(context.Background(), &reviewmetav1.GetReviewMetadataRequest{ReviewId: r.GetReviewId()})
	require.NoError(t, err)
	m := got.GetReviewMetadata()
	assert.Equal(t, int32(workers*each), m.GetReplyAttemptCount())
	assert.False(t, m.GetReplySuccess(), "the latest attempt by time failed")
	assert.Equal(t, "TIMEOUT", m.GetReplyErrorType())
	assert.True(t, m.GetLastReplyAttemptTime().AsTime().Equal(base.Add((workers*each-1)*time.Millisecond)))
}

func TestAttemptIDMakesRetriesHarmless(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	r := review(uuid.New(), base)
	upsert(t, client, r)
	req := &reviewmetav1.RecordReplyAttemptRequest{
		ReviewId: r.GetReviewId(), Success: true, AttemptedAt: timestamppb.New(base), AttemptId: uuid.NewString(),
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	duplicates := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.RecordReplyAttempt(context.Background(), req)
			if assert.NoError(t, err) {
				assert.Equal(t, int32(1), resp.GetReviewMetadata().GetReplyAttemptCount())
				mu.Lock()
				defer mu.Unlock()
				if resp.GetDuplicate() {
					duplicates++
				}
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 7, duplicates)

	other := review(uuid.New(), base)
	upsert(t, client, other)
	reused := proto.Clone(req).(*reviewmetav1.RecordReplyAttemptRequest)
	reused.ReviewId = other.GetReviewId()
	_, err := client.RecordReplyAttempt(context.Background(), reused)
	assert.Equal(t, []string{"attempt_id"}, apptest.ViolatedFields(t, err))
	assert.Equal(t, "ATTEMPT_ID_CONFLICT", apierr.Reason(status.Convert(err)))
}

func TestRecordReplyAttemptRefusals(t *testing.T) {
	t.Parallel()
	client, pool := newClient(t)
	_, err := client.RecordReplyAttempt(context.Background(), &reviewmetav1.RecordReplyAttemptRequest{
		ReviewId: uuid.NewString(), Success: true, AttemptedAt: timestamppb.New(base),
	})
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.Equal(t, "REVIEW_NOT_FOUND", apierr.Reason(status.Convert(err)))

	r := review(uuid.New(), base)
	r.Source = "PICKUP"
	upsert(t, client, r)
	_, err = client.RecordReplyAttempt(context.Background(), &reviewmetav1.RecordReplyAttemptRequest{
		ReviewId: r.GetReviewId(), Success: true, AttemptedAt: timestamppb.New(base),
	})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "REVIEW_TYPE_PICKUP")
	assert.Equal(t, "REVIEW_TYPE_TAKES_NO_REPLIES", apierr.Reason(status.Convert(err)))

	// Which types take replies is data: change the row, not the code.
	_, err = pool.Exec(context.Background(), `UPDATE reviewmeta.review_types SET accepts_replies = true WHERE name = 'PICKUP'`)
	require.NoError(t, err)
	got := attempt(t, client, r.GetReviewId(), true, "", base)
	assert.Equal(t, int32(1), got.GetReplyAttemptCount())
}

func TestBatchWithOneBadItem(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	shop := uuid.New()
	good1, good2 := review(shop, base), review(shop, base)
	bad := review(shop, base)
	bad.ExternalShopId = "shop\x00id"
	dupOld := proto.Clone(good2).(*reviewmetav1.ReviewMetadata)
	dupOld.Source = "STALE"
	dupOld.FetchedAt = timestamppb.New(base.Add(-time.Minute))
	resp, err := client.BatchUpsertReviewMetadata(context.Background(), &reviewmetav1.BatchUpsertReviewMetadataRequest{
		Items: []*reviewmetav1.ReviewMetadata{good1, bad, good2, dupOld},
	})
	require.NoError(t, err)
	res := resp.GetResults()
	require.Len(t, res, 4)
	assert.Equal(t, good1.GetReviewId(), res[0].GetReviewMetadata().GetReviewId())
	assert.Equal(t, int32(codes.InvalidArgument), res[1].GetError().GetCode())
	assert.Equal(t, "items[1].external_shop_id", res[1].GetError().GetFieldViolations()[0].GetField())
	assert.Equal(t, good2.GetReviewId(), res[2].GetReviewMetadata().GetReviewId())
	assert.Empty(t, res[3].GetReviewMetadata().GetSource(), "the older repeat in the page lost to the newer one")

	_, err = client.GetReviewMetadata(context.Background(), &reviewmetav1.GetReviewMetadataRequest{ReviewId: bad.GetReviewId()})
	assert.Equal(t, codes.NotFound, status.Code(err), "the bad item was not stored")

	_, err = client.BatchUpsertReviewMetadata(context.Background(), &reviewmetav1.BatchUpsertReviewMetadataRequest{})
	assert.Equal(t, []string{"items"}, apptest.ViolatedFields(t, err))
}

// A string that is not UTF-8 is refused by field, like any bad value; in
// a page, that review alone.
func TestInvalidUTF8IsRefusedByField(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	shop := uuid.New()
	good, bad := review(shop, base), review(shop, base)
	bad.ExternalBusinessId = "biz-\xff"
	resp, err := client.BatchUpsertReviewMetadata(ctx, &reviewmetav1.BatchUpsertReviewMetadataRequest{
		Items: []*reviewmetav1.ReviewMetadata{bad, good},
	})
	require.NoError(t, err)
	res := resp.GetResults()
	require.Len(t, res, 2)
	assert.Equal(t, "items[0].external_business_id", res[0].GetError().GetFieldViolations()[0].GetField())
	assert.Equal(t, good.GetReviewId(), res[1].GetReviewMetadata().GetReviewId())

	src := review(shop, base)
	src.Source = "\xc3\x28"
	_, err = client.UpsertReviewMetadata(ctx, &reviewmetav1.UpsertReviewMetadataRequest{ReviewMetadata: src})
	assert.Equal(t, []string{"review_metadata.source"}, apptest.ViolatedFields(t, err))
	_, err = client.RecordReplyAttempt(ctx, &reviewmetav1.RecordReplyAttemptRequest{
		ReviewId: good.GetReviewId(), ErrorType: "E\xff", AttemptedAt: timestamppb.New(base),
	})
	assert.Equal(t, []string{"error_type"}, apptest.ViolatedFields(t, err))
	_, err = client.ListReviewMetadata(ctx, &reviewmetav1.ListReviewMetadataRequest{ExternalShopId: "ext-\xff"})
	assert.Equal(t, []string{"external_shop_id"}, apptest.ViolatedFields(t, err))
}

func TestInvalidInputNamesTheField(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	upsertCases := []struct {
		mutate func(*reviewmetav1.ReviewMetadata)
		field  string
	}{
		{func(r *reviewmetav1.ReviewMetadata) { r.ReviewId = "" }, "review_metadata.review_id"},
		{func(r *reviewmetav1.ReviewMetadata) { r.ShopId = "shop-1" }, "review_metadata.shop_id"},
		{func(r *reviewmetav1.ReviewMetadata) { r.ExternalShopId = strings.Repeat("x", 256) }, "review_metadata.external_shop_id"},
		{func(r *reviewmetav1.ReviewMetadata) { r.ExternalBusinessId = "a\x00" }, "review_metadata.external_business_id"},
		{func(r *reviewmetav1.ReviewMetadata) { r.Source = strings.Repeat("P", 65) }, "review_metadata.source"},
		{func(r *reviewmetav1.ReviewMetadata) { r.ReviewType = 12 }, "review_metadata.review_type"},
		{func(r *reviewmetav1.ReviewMetadata) { r.FetchedAt = nil }, "review_metadata.fetched_at"},
		{func(r *reviewmetav1.ReviewMetadata) { r.FetchedAt = timestamppb.New(time.Now().Add(time.Hour)) }, "review_metadata.fetched_at"},
	}
	for _, tc := range upsertCases {
		r := review(uuid.New(), base)
		tc.mutate(r)
		_, err := client.UpsertReviewMetadata(ctx, &reviewmetav1.UpsertReviewMetadataRequest{ReviewMetadata: r})
		assert.Equal(t, []string{tc.field}, apptest.ViolatedFields(t, err), tc.field)
	}
	_, err := client.UpsertReviewMetadata(ctx, &reviewmetav1.UpsertReviewMetadataRequest{})
	assert.Equal(t, []string{"review_metadata"}, apptest.ViolatedFields(t, err))

	for name, tc := range map[string]struct {
		req   *reviewmetav1.RecordReplyAttemptRequest
		field string
	}{
		"bad review id":   {&reviewmetav1.RecordReplyAttemptRequest{ReviewId: "r1", AttemptedAt: timestamppb.New(base)}, "review_id"},
		"no time":         {&reviewmetav1.RecordReplyAttemptRequest{ReviewId: uuid.NewString()}, "attempted_at"},
		"bad attempt id":  {&reviewmetav1.RecordReplyAttemptRequest{ReviewId: uuid.NewString(), AttemptedAt: timestamppb.New(base), AttemptId: "x"}, "attempt_id"},
		"error type long": {&reviewmetav1.RecordReplyAttemptRequest{ReviewId: uuid.NewString(), AttemptedAt: timestamppb.New(base), ErrorType: strings.Repeat("E", 65)}, "error_type"},
	} {
		_, err := client.RecordReplyAttempt(ctx, tc.req)
		assert.Equal(t, []string{tc.field}, apptest.ViolatedFields(t, err), name)
	}
	for name, tc := range map[string]struct {
		req   *reviewmetav1.ListReviewMetadataRequest
		field string
	}{
		"no shop":       {&reviewmetav1.ListReviewMetadataRequest{}, "shop_id"},
		"both shops":    {&reviewmetav1.ListReviewMetadataRequest{ShopId: uuid.NewString(), ExternalShopId: "e"}, "shop_id"},
		"unknown state": {&reviewmetav1.ListReviewMetadataRequest{ShopId: uuid.NewString(), ReplyState: 9}, "reply_state"},
		"unknown type":  {&reviewmetav1.ListReviewMetadataRequest{ShopId: uuid.NewString(), ReviewType: 9}, "review_type"},
		"page size":     {&reviewmetav1.ListReviewMetadataRequest{ShopId: uuid.NewString(), PageSize: 5000}, "page_size"},
		"garbage token": {&reviewmetav1.ListReviewMetadataRequest{ShopId: uuid.NewString(), PageToken: "zzz"}, "page_token"},
	} {
		_, err := client.ListReviewMetadata(ctx, tc.req)
		assert.Equal(t, []string{tc.field}, apptest.ViolatedFields(t, err), name)
	}
	_, err = client.GetReviewMetadata(ctx, &reviewmetav1.GetReviewMetadataRequest{ReviewId: "nope"})
	assert.Equal(t, []string{"review_id"}, apptest.ViolatedFields(t, err))
	_, err = client.GetReplyStats(ctx, &reviewmetav1.GetReplyStatsRequest{ShopId: "nope"})
	assert.Equal(t, []string{"shop_id"}, apptest.ViolatedFields(t, err))
}

// listAll follows next_page_token and returns the review ids in order.
func listAll(t *testing.T, client reviewmetav1.ReviewMetadataServiceClient, req *reviewmetav1.ListReviewMetadataRequest) ([]string, int) {
	t.Helper()
	return apptest.Pages(t, func(token string) ([]string, string, error) {
		req := proto.Clone(req).(*reviewmetav1.ListReviewMetadataRequest)
		req.PageToken = token
		resp, err := client.ListReviewMetadata(context.Background(), req)
		var ids []string
		for _, r := range resp.GetReviewMetadata() {
			ids = append(ids, r.GetReviewId())
		}
		return ids, resp.GetNextPageToken(), err
	})
}

func TestListingByStateAcrossPages(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	shop, otherShop := uuid.New(), uuid.New()
	upsert(t, client, review(otherShop, base)) // never listed for shop

	// 12 reviews, newest created last; every third is PICKUP (no replies).
	type made struct {
		id                   string
		typ                  reviewmetav1.ReviewType
		attempted, succeeded bool
	}
	var all []made
	for i := 0; i < 12; i++ {
		r := review(shop, base)
		if i%3 == 0 {
			r.Source = "PICKUP"
		}
		got := upsert(t, client, r)
		m := made{id: got.GetReviewId(), typ: got.GetReviewType()}
		if m.typ != pickup && i%4 != 1 {
			m.attempted = true
			m.succeeded = i%2 == 0
			attempt(t, client, m.id, m.succeeded, "TIMEOUT", base.Add(time.Duration(i)*time.Second))
		}
		all = append([]made{m}, all...) // newest first
	}
	expect := func(keep func(made) bool) []string {
		var ids []string
		for _, m := range all {
			if keep(m) {
				ids = append(ids, m.id)
			}
		}
		return ids
	}
	cases := map[reviewmetav1.ReplyState]func(made) bool{
		reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED:   func(made) bool { return true },
		reviewmetav1.ReplyState_REPLY_STATE_PENDING:       func(m made) bool { return m.typ != pickup && !m.succeeded },
		reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED: func(m made) bool { return !m.attempted },
		reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED:     func(m made) bool { return m.succeeded },
		reviewmetav1.ReplyState_REPLY_STATE_FAILED:        func(m made) bool { return m.attempted && !m.succeeded },
	}
	for state, keep := range cases {
		want := expect(keep)
		require.NotEmpty(t, want, state.String())
		got, pages := listAll(t, client, &reviewmetav1.ListReviewMetadataRequest{ShopId: shop.String(), ReplyState: state, PageSize: 2})
		assert.Equal(t, want, got, state.String())
		assert.Equal(t, (len(want)+1)/2, pages, state.String())
	}
	byExternal, _ := listAll(t, client, &reviewmetav1.ListReviewMetadataRequest{
		ExternalShopId: "ext-" + shop.String()[:8], ReplyState: reviewmetav1.ReplyState_REPLY_STATE_PENDING, PageSize: 3,
	})
	assert.Equal(t, expect(cases[reviewmetav1.ReplyState_REPLY_STATE_PENDING]), byExternal)
	pickups, _ := listAll(t, client, &reviewmetav1.ListReviewMetadataRequest{ShopId: shop.String(), ReviewType: pickup})
	assert.Equal(t, expect(func(m made) bool { return m.typ == pickup }), pickups)

	// A token only works with the filter it came from.
	first, err := client.ListReviewMetadata(context.Background(), &reviewmetav1.ListReviewMetadataRequest{ShopId: shop.String(), PageSize: 1})
	require.NoError(t, err)
	_, err = client.ListReviewMetadata(context.Background(), &reviewmetav1.ListReviewMetadataRequest{
		ShopId: shop.String(), ReplyState: reviewmetav1.ReplyState_REPLY_STATE_PENDING, PageToken: first.GetNextPageToken(),
	})
	assert.Equal(t, []string{"page_token"}, apptest.ViolatedFields(t, err))
	_, err = client.ListReviewMetadata(context.Background(), &reviewmetav1.ListReviewMetadataRequest{
		ShopId: otherShop.String(), PageToken: first.GetNextPageToken(),
	})
	assert.Equal(t, []string{"page_token"}, apptest.ViolatedFields(t, err))
}

// reviewCursor is ListReviewMetadata's cursor: create_time in Unix
// microseconds, then review_id.
func reviewCursor(micros int64, id uuid.UUID) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(micros)), id[:]...)
}

// TestListReviewMetadataRefusesForgedTokens: only the server's key makes
// tokens, and a signed token's position must be a create_time a row can
// have.
func TestListReviewMetadataRefusesForgedTokens(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	shop := uuid.New()
	for range 3 {
		upsert(t, client, review(shop, base))
	}
	filter := &reviewmetav1.ListReviewMetadataRequest{ShopId: shop.String()}
	sign := func(keys *pagetoken.Keyring, at int64) string {
		token, err := keys.Encode(filter, reviewCursor(at, uuid.Max))
		require.NoError(t, err)
		return token
	}
	list := func(token string) (*reviewmetav1.ListReviewMetadataResponse, error) {
		return client.ListReviewMetadata(context.Background(), &reviewmetav1.ListReviewMetadataRequest{ShopId: shop.String(), PageSize: 1, PageToken: token})
	}

	// Control: signed with the server's key, a position after the newest row.
	resp, err := list(sign(apptest.PageTokens(), time.Now().Add(time.Minute).UnixMicro()))
	require.NoError(t, err)
	assert.Len(t, resp.GetReviewMetadata(), 1)
	// A real token, one byte changed.
	tampered := []byte(resp.GetNextPageToken())
	tampered[len(tampered)/3] ^= 4

	now := time.Now().UnixMicro()
	for name, token := range map[string]string{
		"unkeyed token":           apptest.UnkeyedPageToken(filter, reviewCursor(now, uuid.Max)),
		"another process's key":   sign(pagetoken.NewRandomKeyring(), now),
		"tampered":                string(tampered),
		"signed, before 1970":     sign(apptest.PageTokens(), -1),
		"signed, zero time":       sign(apptest.PageTokens(), time.Time{}.UnixMicro()),
		"signed, years ahead":     sign(apptest.PageTokens(), time.Now().AddDate(5, 0, 0).UnixMicro()),
		"signed, far beyond 9999": sign(apptest.PageTokens(), math.MaxInt64),
	} {
		_, err := list(token)
		apptest.RefusedPageToken(t, err, name)
	}
}

func TestReplyStats(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	shopA, shopB := uuid.New(), uuid.New()
	add := func(shop uuid.UUID, bookingDetail bool, outcomes ...bool) {
		r := review(shop, base)
		r.HasBookingDetail = bookingDetail
		upsert(t, client, r)
		for i, ok := range outcomes {
			attempt(t, client, r.GetReviewId(), ok, "TIMEOUT", base.Add(time.Duration(i)*time.Minute))
		}
	}
	add(shopA, true, true)         // booking, succeeded
	add(shopA, true, false)        // booking, failed
	add(shopA, true)               // booking, not attempted: not counted
	add(shopA, false, false, true) // receipt, failed then succeeded
	add(shopB, false, false)       // receipt, failed

	stats := func(req *reviewmetav1.GetReplyStatsRequest) map[reviewmetav1.ReviewType][3]int64 {
		resp, err := client.GetReplyStats(context.Background(), req)
		require.NoError(t, err)
		out := map[reviewmetav1.ReviewType][3]int64{}
		for _, s := range resp.GetStats() {
			out[s.GetReviewType()] = [3]int64{s.GetAttempted(), s.GetSucceeded(), s.GetFailed()}
		}
		return out
	}
	assert.Equal(t, map[reviewmetav1.ReviewType][3]int64{booking: {2, 1, 1}, receipt: {2, 1, 1}}, stats(&reviewmetav1.GetReplyStatsRequest{}))
	assert.Equal(t, map[reviewmetav1.ReviewType][3]int64{booking: {2, 1, 1}, receipt: {1, 1, 0}}, stats(&reviewmetav1.GetReplyStatsRequest{ShopId: shopA.String()}))
	assert.Equal(t, map[reviewmetav1.ReviewType][3]int64{receipt: {1, 1, 0}},
		stats(&reviewmetav1.GetReplyStatsRequest{Since: timestamppb.New(base.Add(30 * time.Second))}), "only the review whose latest attempt is after since")
	assert.Empty(t, stats(&reviewmetav1.GetReplyStatsRequest{ShopId: shopB.String(), Since: timestamppb.New(base.Add(time.Hour))}))
}
