package validate_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/validate"
)

// violation returns the single description recorded for field, "" if none.
func violation(v *apierr.Violations, field string) string {
	for _, fv := range v.List() {
		if fv.GetField() == field {
			return fv.GetDescription()
		}
	}
	return ""
}

func TestUUID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		ok      bool
		problem string
	}{
		{"0191d2c4-7b1e-7c3a-9f4e-2d5b6a7c8d9e", true, ""},
		{"0191D2C4-7B1E-7C3A-9F4E-2D5B6A7C8D9E", true, ""},
		{"", false, "required"},
		{"not-a-uuid", false, "must be a UUID"},
		{"urn:uuid:0191d2c4-7b1e-7c3a-9f4e-2d5b6a7c8d9e", false, "must be a UUID"},
		{"{0191d2c4-7b1e-7c3a-9f4e-2d5b6a7c8d9e}", false, "must be a UUID"},
		{"0191d2c47b1e7c3a9f4e2d5b6a7c8d9e", false, "must be a UUID"},
		{"0191d2c4-7b1e-7c3a-9f4e-2d5b6a7c8d9\x00", false, "must be a UUID"},
	}
	for _, tt := range tests {
		var v apierr.Violations
		id, ok := validate.UUID(&v, "user_id", tt.in)
		assert.Equal(t, tt.ok, ok, tt.in)
		assert.Contains(t, violation(&v, "user_id"), tt.problem, tt.in)
		if ok {
			assert.Equal(t, strings.ToLower(tt.in), id.String())
		}
	}
}

func TestTimestampAndWithin(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var v apierr.Violations
	_, ok := validate.Timestamp(&v, "missing", nil)
	assert.False(t, ok)
	_, ok = validate.Timestamp(&v, "huge", &timestamppb.Timestamp{Seconds: math.MaxInt64})
	assert.False(t, ok)
	_, ok = validate.Timestamp(&v, "bad_nanos", &timestamppb.Timestamp{Seconds: 1, Nanos: -1})
	assert.False(t, ok)
	got, ok := validate.Timestamp(&v, "fine", timestamppb.New(now))
	assert.True(t, ok)
	assert.True(t, got.Equal(now))
	assert.Equal(t, "required", violation(&v, "missing"))
	assert.Equal(t, "not a valid timestamp", violation(&v, "huge"))
	assert.Equal(t, "not a valid timestamp", violation(&v, "bad_nanos"))

	for _, tt := range []struct {
		at      time.Time
		problem string
	}{
		{now, ""},
		{now.Add(5 * time.Minute), ""},
		{now.Add(5*time.Minute + time.Second), "more than 5m0s in the future"},
		{now.Add(-24 * time.Hour), ""},
		{now.Add(-24*time.Hour - time.Second), "older than 24h0m0s"},
	} {
		var v apierr.Violations
		ok := validate.Within(&v, "at", tt.at, now, 24*time.Hour, 5*time.Minute, nil)
		assert.Equal(t, tt.problem == "", ok, tt.at)
		assert.Contains(t, violation(&v, "at"), tt.problem)
	}
}

func TestEnum(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		value    commonv1.Outcome
		required bool
		problem  string
	}{
		{commonv1.Outcome_OUTCOME_SUCCESS, true, ""},
		{commonv1.Outcome_OUTCOME_UNSPECIFIED, false, ""},
		{commonv1.Outcome_OUTCOME_UNSPECIFIED, true, "required"},
		{commonv1.Outcome(42), false, "unknown Outcome value 42"},
		{commonv1.Outcome(-1), true, "unknown Outcome value -1"},
	} {
		var v apierr.Violations
		ok := validate.Enum(&v, "outcome", tt.value, tt.required)
		assert.Equal(t, tt.problem == "", ok, tt.value)
		assert.Contains(t, violation(&v, "outcome"), tt.problem)
	}
}

func TestPageSize(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in      int32
		want    int
		problem string
	}{
		{0, 50, ""}, {1, 1, ""}, {1000, 1000, ""},
		{1001, 50, "at most 1000"}, {-1, 50, "must not be negative"},
	} {
		var v apierr.Violations
		assert.Equal(t, tt.want, validate.PageSize(&v, "page_size", tt.in))
		assert.Contains(t, violation(&v, "page_size"), tt.problem)
		assert.Equal(t, tt.problem == "", v.Empty())
	}
}
