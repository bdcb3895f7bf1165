package pagetoken_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
)

// The benchmarks use ListOperationLogs' filter and cursor size, the
// largest of the services'. scheme=v1-unkeyed is the former scheme
// (legacyEncode), kept to compare in one run.

func benchFilter() *oplogv1.ListOperationLogsRequest {
	return &oplogv1.ListOperationLogsRequest{
		UserId:    "0193a0c2-0000-7000-8000-0000000000aa",
		Outcome:   commonv1.Outcome_OUTCOME_FAILED,
		ErrorType: "AUTH_REQUIRED",
		Since:     timestamppb.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
}

var benchCursor = make([]byte, 40)

func BenchmarkEncode(b *testing.B) {
	f := benchFilter()
	b.Run("scheme=v1-unkeyed", func(b *testing.B) {
		for b.Loop() {
			_ = legacyEncode(f, benchCursor)
		}
	})
	b.Run("scheme=v2-hmac", func(b *testing.B) {
		r := ring(b, testKey("k1"))
		for b.Loop() {
			if _, err := r.Encode(f, benchCursor); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	f := benchFilter()
	b.Run("scheme=v1-unkeyed", func(b *testing.B) {
		tok := legacyEncode(f, benchCursor)
		for b.Loop() {
			if _, err := legacyDecode(tok, f); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("scheme=v2-hmac", func(b *testing.B) {
		r := ring(b, testKey("k1"), testKey("k0"))
		tok := encode(b, r, f, benchCursor)
		for b.Loop() {
			if _, err := r.Decode(tok, f); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What a service pays per page on top: cloning the request to clear
	// page_size and page_token (listFilter).
	b.Run("listFilter-clone", func(b *testing.B) {
		req := benchFilter()
		req.PageSize, req.PageToken = 50, "x"
		for b.Loop() {
			c := proto.Clone(req).(*oplogv1.ListOperationLogsRequest)
			c.PageSize, c.PageToken = 0, ""
		}
	})
}
