package reviewmetasvc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/reviewmeta/internal/reviewmetasvc"
	"github.com/platforma/platforma/services/reviewmeta/internal/store"
)

// Run with `make bench`. Scrapers: 16 concurrent callers, each sending
// pages of new reviews, through gRPC and through the same store call
// (same SQL, same pool size) directly with pgx.

const scrapers = 16

func page(rng *rand.Rand, size int) []*reviewmetav1.ReviewMetadata {
	shop := uuid.NewString()
	items := make([]*reviewmetav1.ReviewMetadata, size)
	for i := range items {
		items[i] = &reviewmetav1.ReviewMetadata{
			ReviewId:           uuid.NewString(),
			ShopId:             shop,
			ExternalShopId:     "ext-" + shop[:8],
			ExternalBusinessId: "biz-" + shop[:8],
			Source:             []string{"PICKUP", "STORE", "APP"}[rng.IntN(3)],
			HasBookingDetail:   rng.IntN(2) == 0,
			FetchedAt:          timestamppb.New(time.Now().Add(-time.Minute)),
		}
	}
	return items
}

func BenchmarkBatchUpsertReviewMetadata(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("page=%d/grpc", size), func(b *testing.B) {
			pool := apptest.BenchPool(b)
			conn := apptest.Serve(b, pool, func(r server.Registrar) error {
				return reviewmetasvc.Register(r, pool, reviewmetasvc.Config{PageTokens: apptest.PageTokens()})
			})
			client := reviewmetav1.NewReviewMetadataServiceClient(conn)
			apptest.Parallel(b, scrapers, func(rng *rand.Rand) error {
				_, err := client.BatchUpsertReviewMetadata(context.Background(), &reviewmetav1.BatchUpsertReviewMetadataRequest{Items: page(rng, size)})
				return err
			})
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "reviews/s")
		})
		b.Run(fmt.Sprintf("page=%d/pgx", size), func(b *testing.B) {
			st := store.New(apptest.BenchPool(b))
			apptest.Parallel(b, scrapers, func(rng *rand.Rand) error {
				items := page(rng, size)
				ups := make([]store.Upsert, len(items))
				for i, it := range items {
					ups[i] = store.Upsert{
						ReviewID: uuid.MustParse(it.GetReviewId()), ShopID: uuid.MustParse(it.GetShopId()),
						ExternalShopID: it.GetExternalShopId(), ExternalBusinessID: it.GetExternalBusinessId(),
						ReviewType: 2, Source: it.GetSource(), HasBookingDetail: it.GetHasBookingDetail(), FetchedAt: it.GetFetchedAt().AsTime(),
					}
				}
				_, err := st.Upsert(context.Background(), ups)
				return err
			})
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "reviews/s")
		})
	}
}

// BenchmarkListReviewMetadata5M lists one shop of 100,000 reviews in a
// table of 5,000,000 (4,900 other shops of 1,000), following page tokens
// from the newest, all reviews and only those awaiting a reply.
func BenchmarkListReviewMetadata5M(b *testing.B) {
	pool := apptest.BenchPool(b)
	ctx := context.Background()
	start := time.Now()
	_, err := pool.Exec(ctx, `
		INSERT INTO reviewmeta.review_metadata (review_id, shop_id, external_shop_id, review_type, has_booking_detail,
			fetched_at, create_time, reply_attempted, reply_success, reply_attempt_count, last_reply_attempt_time)
		SELECT gen_random_uuid(), s.id, 'ext-' || s.n, 1 + g % 3, g % 3 = 0, now(), now() - make_interval(secs => g),
			g % 10 <> 0, g % 10 <> 0, (g % 10 <> 0)::int, CASE WHEN g % 10 <> 0 THEN now() - make_interval(mins => g) END
		FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, 4900) n) s, generate_series(1, 1000) g;
		INSERT INTO reviewmeta.review_metadata (review_id, shop_id, external_shop_id, review_type, has_booking_detail,
			fetched_at, create_time, reply_attempted, reply_success, reply_attempt_count, last_reply_attempt_time)
		SELECT gen_random_uuid(), '00000000-0000-0000-0000-00000000b16b', 'ext-big', 1 + g % 3, g % 3 = 0, now(),
			now() - make_interval(secs => g), g % 10 <> 0, g % 10 <> 0, (g % 10 <> 0)::int,
			CASE WHEN g % 10 <> 0 THEN now() - make_interval(mins => g) END
		FROM generate_series(1, 100000) g`)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `VACUUM ANALYZE reviewmeta.review_metadata`)
	require.NoError(b, err)
	b.Logf("seeded 5M reviews in %s", time.Since(start).Round(time.Second))

	conn := apptest.Serve(b, pool, func(r server.Registrar) error {
		return reviewmetasvc.Register(r, pool, reviewmetasvc.Config{PageTokens: apptest.PageTokens()})
	})
	client := reviewmetav1.NewReviewMetadataServiceClient(conn)
	const bigShop = "00000000-0000-0000-0000-00000000b16b"
	for _, state := range []reviewmetav1.ReplyState{reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED, reviewmetav1.ReplyState_REPLY_STATE_PENDING} {
		for _, callers := range []int{1, scrapers} {
			b.Run(fmt.Sprintf("%s/callers=%d", state, callers), func(b *testing.B) {
				var lat apptest.Latencies
				apptest.Parallel(b, callers, func(rng *rand.Rand) error {
					// Each call is one page of 50, a random 1-20 pages deep.
					req := &reviewmetav1.ListReviewMetadataRequest{ShopId: bigShop, ReplyState: state}
					for depth := rng.IntN(20); ; depth-- {
						var resp *reviewmetav1.ListReviewMetadataResponse
						err := lat.Time(func() (err error) {
							resp, err = client.ListReviewMetadata(context.Background(), req)
							return err
						})
						if err != nil || depth == 0 || resp.GetNextPageToken() == "" {
							return err
						}
						req.PageToken = resp.GetNextPageToken()
					}
				})
				lat.Report(b)
			})
		}
	}
}
