package pagetoken_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/pagetoken"
)

func TestPage(t *testing.T) {
	t.Parallel()
	rows := []int{1, 2, 3, 4, 5}
	fetch := func(limit int) ([]int, error) { return rows[:min(limit, len(rows))], nil }
	next := func(last int) (string, error) { return string(rune('a' + last)), nil }
	for _, tt := range []struct {
		name     string
		pageSize int
		want     []int
		token    string
	}{
		{"more rows than the page", 2, []int{1, 2}, "c"},
		{"exactly a page: the last one", 5, rows, ""},
		{"fewer than a page", 10, rows, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, token, err := pagetoken.Page(tt.pageSize, fetch, next)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.token, token)
		})
	}
	boom := errors.New("boom")
	_, _, err := pagetoken.Page(2, func(int) ([]int, error) { return nil, boom }, next)
	assert.ErrorIs(t, err, boom)
	_, _, err = pagetoken.Page(2, fetch, func(int) (string, error) { return "", boom })
	assert.ErrorIs(t, err, boom)
}

// A token is bound to the filter, not to the page size or the token
// itself; a message without page fields is its own filter.
func TestFilterAndEncodeFor(t *testing.T) {
	t.Parallel()
	req := &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_STABLE, PageSize: 20, PageToken: "x"}
	f := pagetoken.Filter(req)
	assert.True(t, proto.Equal(&profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_STABLE}, f))
	assert.Equal(t, int32(20), req.GetPageSize(), "the request itself is not changed")
	other := &grpc_health_v1.HealthCheckRequest{Service: "s"}
	assert.True(t, proto.Equal(other, pagetoken.Filter(other)))

	keys := pagetoken.NewRandomKeyring()
	token, err := keys.EncodeFor(req, []byte("cursor"))
	require.NoError(t, err)
	bigger := &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_STABLE, PageSize: 100, PageToken: token}
	cursor, err := keys.DecodeFor(bigger, token)
	require.NoError(t, err)
	assert.Equal(t, "cursor", string(cursor))
	_, err = keys.DecodeFor(&profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL}, token)
	assert.ErrorIs(t, err, pagetoken.ErrInvalid)
}
