package pagetoken_test

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/require"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/pagetoken"
)

// FuzzDecode: decoding any string never panics, fails only with
// ErrInvalid, and accepts only the exact token a key of the ring makes for
// the cursor and filter: nothing is accepted without the right MAC. The
// seed corpus (testdata/fuzz/FuzzDecode) holds valid tokens of the ring's
// two keys (test keys k1 and k2, filter profileFilter), a version 1 token
// and near misses. Run:
//
//	go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 10s ./services/kit/pagetoken/
func FuzzDecode(f *testing.F) {
	r := ring(f, testKey("k1"), testKey("k2"))
	sameKidOtherSecret := ring(f,
		pagetoken.Key{ID: "k1", Secret: testKey("k1x").Secret},
		pagetoken.Key{ID: "k2", Secret: testKey("k2x").Secret})
	filter := profileFilter
	f.Add(encode(f, r, filter, []byte("score=12.50;id=abc")))
	f.Fuzz(func(t *testing.T, token string) {
		cursor, err := r.Decode(token, filter)
		if err != nil {
			require.ErrorIs(t, err, pagetoken.ErrInvalid)
			return
		}
		raw, err := base64.RawURLEncoding.DecodeString(token)
		require.NoError(t, err)
		kid := string(raw[2 : 2+int(raw[1])])
		require.Contains(t, []string{"k1", "k2"}, kid)
		require.Equal(t, encode(t, ring(t, testKey(kid)), filter, cursor), token,
			"an accepted token is the one the key makes for its cursor")
		_, err = r.Decode(token, &profilev1.ListProfilesRequest{})
		require.ErrorIs(t, err, pagetoken.ErrInvalid, "another filter refuses it")
		_, err = sameKidOtherSecret.Decode(token, filter)
		require.ErrorIs(t, err, pagetoken.ErrInvalid, "another ring refuses it")
	})
}
