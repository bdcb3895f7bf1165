package pagetoken_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/pagetoken"
)

func TestRoundTripAndMisuse(t *testing.T) {
	filter := &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, MaxScore: proto.Float64(40)}
	cursor := []byte("score=12.50;id=abc")
	token, err := pagetoken.Encode(filter, cursor)
	require.NoError(t, err)

	got, err := pagetoken.Decode(token, filter)
	require.NoError(t, err)
	assert.Equal(t, cursor, got)

	// An equal filter built separately decodes it too.
	again := &profilev1.ListProfilesRequest{MaxScore: proto.Float64(40), Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL}
	_, err = pagetoken.Decode(token, again)
	require.NoError(t, err)

	other := &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, MaxScore: proto.Float64(41)}
	edited := []byte(token)
	edited[5] ^= 'A' ^ 'B'
	for name, tc := range map[string]struct {
		token  string
		filter proto.Message
	}{
		"other filter":   {token, other},
		"no filter":      {token, &profilev1.ListProfilesRequest{}},
		"edited":         {string(edited), filter},
		"truncated":      {token[:len(token)-3], filter},
		"not base64":     {"!!!", filter},
		"empty":          {"", filter},
		"another token":  {"AQ", filter},
		"appended bytes": {token + "AAAA", filter},
	} {
		_, err := pagetoken.Decode(tc.token, tc.filter)
		assert.ErrorIs(t, err, pagetoken.ErrInvalid, name)
	}
}
