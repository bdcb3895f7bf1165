package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/reviewmeta"
)

// No migrations in the template: the test runs the binary's own migrate.
func TestMain(m *testing.M) { pgtest.Main(m) }

func TestBinaryMigratesAndServes(t *testing.T) {
	t.Parallel()
	grpcService := reviewmetav1.ReviewMetadataService_ServiceDesc.ServiceName
	s := apptest.Start(t, reviewmeta.Service(), grpcService)
	assert.Contains(t, apptest.ListServices(t, s.Conn), grpcService, "reflection lists the service")

	client := reviewmetav1.NewReviewMetadataServiceClient(s.Conn)
	ctx := context.Background()
	reviewID := uuid.NewString()
	_, err := client.UpsertReviewMetadata(ctx, &reviewmetav1.UpsertReviewMetadataRequest{ReviewMetadata: &reviewmetav1.ReviewMetadata{
		ReviewId: reviewID, ShopId: uuid.NewString(), HasBookingDetail: true, FetchedAt: timestamppb.New(time.Now()),
	}})
	require.NoError(t, err)
	// The migration's seed data: booking reviews take replies.
	attempt := &reviewmetav1.RecordReplyAttemptRequest{
		ReviewId: reviewID, Success: true, AttemptedAt: timestamppb.New(time.Now()), AttemptId: uuid.NewString(),
	}
	resp, err := client.RecordReplyAttempt(ctx, attempt)
	require.NoError(t, err)
	assert.Equal(t, reviewmetav1.ReviewType_REVIEW_TYPE_BOOKING, resp.GetReviewMetadata().GetReviewType())
	assert.Equal(t, reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED, resp.GetReviewMetadata().GetReplyState())
	_, err = client.RecordReplyAttempt(ctx, attempt) // a retry
	require.NoError(t, err)

	metrics := apptest.Scrape(t, s.MetricsAddr)
	assert.Contains(t, metrics, `platforma_reply_attempts_total{result="success",review_type="BOOKING"} 1`, "the retry is not counted")
	assert.Contains(t, metrics, `platforma_reply_attempts_total{result="failure",review_type="BOOKING"} 0`)
}
