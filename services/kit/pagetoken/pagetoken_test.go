package pagetoken_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/pagetoken"
)

// testKey is a fixed key: tokens it signs are the same in every run.
func testKey(id string) pagetoken.Key {
	s := sha256.Sum256([]byte("pagetoken test key " + id))
	return pagetoken.Key{ID: id, Secret: s[:]}
}

func ring(t testing.TB, keys ...pagetoken.Key) *pagetoken.Keyring {
	t.Helper()
	r, err := pagetoken.NewKeyring(keys...)
	require.NoError(t, err)
	return r
}

func encode(t testing.TB, r *pagetoken.Keyring, filter proto.Message, cursor []byte) string {
	t.Helper()
	token, err := r.Encode(filter, cursor)
	require.NoError(t, err)
	return token
}

// legacyEncode is the version 1 scheme this package used to have: an
// unkeyed SHA-256 checksum anyone could compute.
func legacyEncode(filter proto.Message, cursor []byte) string {
	buf := append([]byte{1}, cursor...)
	buf = append(buf, legacySum(filter, cursor)...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// legacyDecode is version 1's Decode, for the benchmarks.
func legacyDecode(token string, filter proto.Message) ([]byte, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 1+12 || raw[0] != 1 {
		return nil, pagetoken.ErrInvalid
	}
	cursor := raw[1 : len(raw)-12]
	if !bytes.Equal(raw[len(raw)-12:], legacySum(filter, cursor)) {
		return nil, pagetoken.ErrInvalid
	}
	return cursor, nil
}

func legacySum(filter proto.Message, cursor []byte) []byte {
	f, err := proto.MarshalOptions{Deterministic: true}.Marshal(filter)
	if err != nil {
		panic(err)
	}
	h := sha256.New()
	h.Write([]byte{byte(len(f) >> 24), byte(len(f) >> 16), byte(len(f) >> 8), byte(len(f))})
	h.Write(f)
	h.Write(cursor)
	return h.Sum(nil)[:12]
}

var profileFilter = &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, MaxScore: proto.Float64(40)}

func TestRoundTripAndMisuse(t *testing.T) {
	t.Parallel()
	r := ring(t, testKey("k1"))
	filter := profileFilter
	cursor := []byte("score=12.50;id=abc")
	token := encode(t, r, filter, cursor)

	got, err := r.Decode(token, filter)
	require.NoError(t, err)
	assert.Equal(t, cursor, got)

	// An equal filter built separately decodes it too.
	again := &profilev1.ListProfilesRequest{MaxScore: proto.Float64(40), Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL}
	_, err = r.Decode(token, again)
	require.NoError(t, err)

	// An empty cursor is a cursor too.
	empty := encode(t, r, filter, nil)
	got, err = r.Decode(empty, filter)
	require.NoError(t, err)
	assert.Empty(t, got)

	other := &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, MaxScore: proto.Float64(41)}
	edited := []byte(token)
	edited[5] ^= 'A' ^ 'B'
	for name, tc := range map[string]struct {
		token  string
		filter proto.Message
	}{
		"other filter":     {token, other},
		"no filter":        {token, &profilev1.ListProfilesRequest{}},
		"edited":           {string(edited), filter},
		"truncated":        {token[:len(token)-3], filter},
		"not base64":       {"!!!", filter},
		"empty":            {"", filter},
		"another token":    {"AQ", filter},
		"appended bytes":   {token + "AAAA", filter},
		"line break":       {token[:10] + "\n" + token[10:], filter},
		"padding":          {token + strings.Repeat("=", (4-len(token)%4)%4+4), filter},
		"standard base64":  {strings.NewReplacer("-", "+", "_", "/").Replace(token) + "+", filter},
		"huge":             {strings.Repeat("A", 1<<20), filter},
		"only kid and mac": {tokenOf([]byte{2, 2, 'k', '1'}, make([]byte, 32)), filter},
	} {
		_, err := r.Decode(tc.token, tc.filter)
		assert.ErrorIs(t, err, pagetoken.ErrInvalid, name)
	}
}

func tokenOf(parts ...[]byte) string {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestTokenFormat pins the layout and the MAC input (see the package
// documentation): a change would break every token in flight during a
// rolling deploy. The expected token was computed independently (Python's
// hmac module) from the documented layout.
func TestTokenFormat(t *testing.T) {
	t.Parallel()
	r := ring(t, testKey("k1"))
	token := encode(t, r, &oplogv1.ListLoginDeadLettersRequest{}, []byte("cursor"))
	raw, err := base64.RawURLEncoding.DecodeString(token)
	require.NoError(t, err)
	assert.Equal(t, []byte{2, 2, 'k', '1', 'c', 'u', 'r', 's', 'o', 'r'}, raw[:10], "version, len(kid), kid, cursor")
	assert.Len(t, raw, 10+32, "then the full HMAC-SHA256")
	assert.Equal(t, goldenToken, token)
}

// goldenToken: HMAC-SHA256(key=sha256("pagetoken test key k1"),
// 02 02 "k1" | 0000002e "platforma.oplog.v1.ListLoginDeadLettersRequest" | 00000000 | "cursor").
const goldenToken = "AgJrMWN1cnNvcom62mNGMeh2GPlY9o0uabslolPjZqxMgrahY-o9t120"

func TestTokensMintedWithoutTheKeyAreRefused(t *testing.T) {
	t.Parallel()
	r := ring(t, testKey("k1"))
	filter := profileFilter
	cursor := []byte("score=12.50;id=abc")
	valid := encode(t, r, filter, cursor)
	raw, err := base64.RawURLEncoding.DecodeString(valid)
	require.NoError(t, err)
	body := raw[:len(raw)-32]

	// Anyone can compute an unkeyed checksum; nobody without the key can
	// compute the MAC.
	unkeyed := sha256.New()
	unkeyed.Write(body)
	for name, token := range map[string]string{
		"version 1 (unkeyed checksum)": legacyEncode(filter, cursor),
		"same kid, another secret":     encode(t, ring(t, pagetoken.Key{ID: "k1", Secret: []byte(strings.Repeat("x", 32))}), filter, cursor),
		"unknown kid":                  encode(t, ring(t, testKey("k9")), filter, cursor),
		"random key":                   encode(t, pagetoken.NewRandomKeyring(), filter, cursor),
		"sha256 of the body as mac":    tokenOf(body, unkeyed.Sum(nil)),
		"zero mac":                     tokenOf(body, make([]byte, 32)),
		"mac left out":                 tokenOf(body),
		"version 1 byte, valid mac":    tokenOf([]byte{1}, raw[1:]),
	} {
		_, err := r.Decode(token, filter)
		assert.ErrorIs(t, err, pagetoken.ErrInvalid, name)
	}
}

// TestEveryTamperedByteIsRefused flips each bit of a token's bytes.
func TestEveryTamperedByteIsRefused(t *testing.T) {
	t.Parallel()
	r := ring(t, testKey("k1"), testKey("k2"))
	filter := profileFilter
	raw, err := base64.RawURLEncoding.DecodeString(encode(t, r, filter, []byte("score=12.50;id=abc")))
	require.NoError(t, err)
	for i := range raw {
		for bit := range 8 {
			edited := append([]byte(nil), raw...)
			edited[i] ^= 1 << bit
			_, err := r.Decode(base64.RawURLEncoding.EncodeToString(edited), filter)
			require.ErrorIs(t, err, pagetoken.ErrInvalid, "byte %d bit %d", i, bit)
		}
	}
	// The kid rewritten to the ring's other key, MAC kept.
	edited := append([]byte(nil), raw...)
	edited[3] = '2'
	_, err = r.Decode(base64.RawURLEncoding.EncodeToString(edited), filter)
	assert.ErrorIs(t, err, pagetoken.ErrInvalid)
}

// TestTokensAreBoundToTheMessageType: two requests that encode alike (both
// empty) still do not share tokens.
func TestTokensAreBoundToTheMessageType(t *testing.T) {
	t.Parallel()
	r := ring(t, testKey("k1"))
	token := encode(t, r, &oplogv1.ListLoginDeadLettersRequest{}, []byte("c"))
	_, err := r.Decode(token, &profilev1.ListProfilesRequest{})
	assert.ErrorIs(t, err, pagetoken.ErrInvalid)
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	filter := profileFilter
	cursor := []byte("c")
	old := ring(t, testKey("old"))
	oldToken := encode(t, old, filter, cursor)

	// Step 1: the new key joins as a verifier; the old key still signs.
	joined := ring(t, testKey("old"), testKey("new"))
	assert.Equal(t, "old", joined.SigningKeyID())
	_, err := joined.Decode(oldToken, filter)
	require.NoError(t, err)
	// ...and a replica already at step 1 makes tokens the others accept.
	_, err = old.Decode(encode(t, joined, filter, cursor), filter)
	require.NoError(t, err)

	// Step 2: the new key signs; the old one still verifies.
	rotated := ring(t, testKey("new"), testKey("old"))
	assert.Equal(t, "new", rotated.SigningKeyID())
	assert.Equal(t, []string{"new", "old"}, rotated.KeyIDs())
	_, err = rotated.Decode(oldToken, filter)
	require.NoError(t, err, "a token of the old key verifies while the old key is in the ring")
	newToken := encode(t, rotated, filter, cursor)
	_, err = joined.Decode(newToken, filter)
	require.NoError(t, err, "replicas still at step 1 accept the new key's tokens")

	// Step 3: the old key is gone.
	retired := ring(t, testKey("new"))
	_, err = retired.Decode(oldToken, filter)
	assert.ErrorIs(t, err, pagetoken.ErrInvalid, "a token of a removed key is refused")
	_, err = retired.Decode(newToken, filter)
	require.NoError(t, err)
}

func TestRandomKeyringsDoNotShareTokens(t *testing.T) {
	t.Parallel()
	a, b := pagetoken.NewRandomKeyring(), pagetoken.NewRandomKeyring()
	assert.Equal(t, pagetoken.EphemeralKeyID, a.SigningKeyID())
	token := encode(t, a, profileFilter, []byte("c"))
	_, err := a.Decode(token, profileFilter)
	require.NoError(t, err)
	_, err = b.Decode(token, profileFilter)
	assert.ErrorIs(t, err, pagetoken.ErrInvalid)
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	k1 := base64.StdEncoding.EncodeToString(testKey("k1").Secret)
	k2 := base64.RawURLEncoding.EncodeToString(testKey("k2").Secret)
	r, err := pagetoken.ParseKeyring("k1:" + k1 + ",k2:" + k2)
	require.NoError(t, err)
	assert.Equal(t, []string{"k1", "k2"}, r.KeyIDs())
	// The same keys as NewKeyring's: tokens pass between the two.
	_, err = r.Decode(encode(t, ring(t, testKey("k1")), profileFilter, []byte("c")), profileFilter)
	require.NoError(t, err)
	_, err = r.Decode(encode(t, ring(t, testKey("k2")), profileFilter, []byte("c")), profileFilter)
	require.NoError(t, err)

	// A file: one key a line, blank lines and spaces allowed.
	keys, err := pagetoken.ParseKeys("\n  k2:" + k2 + "\r\n\nk1:" + k1 + "\n")
	require.NoError(t, err)
	assert.Equal(t, []pagetoken.Key{testKey("k2"), testKey("k1")}, keys)

	generated, err := pagetoken.GenerateKey("dev")
	require.NoError(t, err)
	g, err := pagetoken.ParseKeyring(generated)
	require.NoError(t, err)
	assert.Equal(t, "dev", g.SigningKeyID())
	other, _ := pagetoken.GenerateKey("dev")
	assert.NotEqual(t, generated, other)
	_, err = pagetoken.GenerateKey("a:b")
	assert.Error(t, err)

	short := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("s", 31)))
	for name, spec := range map[string]string{
		"empty":          "",
		"only commas":    " , ,",
		"no kid":         k1,
		"empty kid":      ":" + k1,
		"kid with space": "k 1:" + k1,
		"kid too long":   strings.Repeat("k", 33) + ":" + k1,
		"kid not ascii":  "clé:" + k1,
		"short key":      "k1:" + short,
		"empty key":      "k1:",
		"not base64":     "k1:" + k1[:20] + "!" + k1[21:],
		"duplicate kid":  "k1:" + k1 + ",k1:" + k2,
	} {
		_, err := pagetoken.ParseKeyring(spec)
		if assert.Error(t, err, name) {
			for _, secret := range []string{k1, k2, short, k1[:20]} {
				assert.NotContains(t, err.Error(), secret, "%s: errors never show a key", name)
			}
		}
	}
	_, err = pagetoken.NewKeyring()
	assert.Error(t, err, "a ring needs a key")
	_, err = pagetoken.NewKeyring(pagetoken.Key{ID: "k1", Secret: make([]byte, 31)})
	assert.Error(t, err)
}

func TestSecretsAreNeverPrinted(t *testing.T) {
	t.Parallel()
	key := testKey("k1")
	r := ring(t, key)
	secretB64 := base64.StdEncoding.EncodeToString(key.Secret)
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{r, key, []pagetoken.Key{key}, struct{ Keys *pagetoken.Keyring }{r}} {
			out := fmt.Sprintf(format, v)
			assert.NotContains(t, out, secretB64)
			assert.NotContains(t, out, fmt.Sprint(key.Secret[:4])[1:8], "no bytes either: %s", out)
			assert.NotContains(t, out, string(key.Secret[:4]))
		}
	}
	assert.Equal(t, "pagetoken.Keyring{k1}", r.String())
}

func TestEncodeRefusesHugeCursors(t *testing.T) {
	t.Parallel()
	r := ring(t, testKey(strings.Repeat("k", pagetoken.MaxKeyIDBytes)))
	_, err := r.Encode(profileFilter, make([]byte, pagetoken.MaxCursorBytes+1))
	require.Error(t, err)
	// The longest token Encode makes still decodes.
	token := encode(t, r, profileFilter, make([]byte, pagetoken.MaxCursorBytes))
	_, err = r.Decode(token, profileFilter)
	require.NoError(t, err)
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	r := ring(t, testKey("k1"), testKey("k2"))
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				filter := &profilev1.ListProfilesRequest{MaxScore: proto.Float64(float64(g*1000 + i))}
				cursor := []byte(fmt.Sprint(g, i))
				token, err := r.Encode(filter, cursor)
				if !assert.NoError(t, err) {
					return
				}
				got, err := r.Decode(token, filter)
				if !assert.NoError(t, err) || !assert.Equal(t, cursor, got) {
					return
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
}
