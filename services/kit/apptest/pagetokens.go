package apptest

import (
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
)

// PageTokenKeys is a page token key ring in the format of
// -page-token-keys, for tests only: fixed, so that a test can sign tokens
// the service accepts, e.g. one whose content breaks the request's limits,
// which the service must still refuse.
const PageTokenKeys = "apptest:YXBwdGVzdCBwYWdlIHRva2VuIGtleTogdGVzdHMgb25seSE="

// PageTokens is the key ring of PageTokenKeys.
func PageTokens() *pagetoken.Keyring {
	r, err := pagetoken.ParseKeyring(PageTokenKeys)
	if err != nil {
		panic(err) // a constant that parses
	}
	return r
}

// UnkeyedPageToken makes a token of the former scheme (version 1: an
// unkeyed SHA-256 checksum that anyone can compute) for filter and cursor,
// to check that services refuse such tokens.
func UnkeyedPageToken(filter proto.Message, cursor []byte) string {
	f, err := proto.MarshalOptions{Deterministic: true}.Marshal(filter)
	if err != nil {
		panic(err)
	}
	h := sha256.New()
	h.Write([]byte{byte(len(f) >> 24), byte(len(f) >> 16), byte(len(f) >> 8), byte(len(f))})
	h.Write(f)
	h.Write(cursor)
	buf := append([]byte{1}, cursor...)
	buf = append(buf, h.Sum(nil)[:12]...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// RefusedPageToken asserts that err is INVALID_ARGUMENT with one field
// violation, page_token, saying pagetoken.ErrInvalid: what every refused
// token gets, whatever is wrong with it.
func RefusedPageToken(t testing.TB, err error, name string) {
	t.Helper()
	if fields := ViolatedFields(t, err); len(fields) != 1 || fields[0] != "page_token" {
		t.Errorf("%s: want a violation of page_token only, got %v", name, fields)
		return
	}
	if got := apierr.FieldViolations(status.Convert(err))[0].GetDescription(); got != pagetoken.ErrInvalid.Error() {
		t.Errorf("%s: page_token: %q, want %q", name, got, pagetoken.ErrInvalid.Error())
	}
}
