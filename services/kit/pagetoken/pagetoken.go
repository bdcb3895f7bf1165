// Package pagetoken makes the opaque page tokens of keyset pagination.
//
// A token carries the position after the last item of a page (the
// cursor, encoded by the service) and a checksum over the cursor and the
// request's filter. A token used with a different filter, truncated or
// edited fails the checksum and is refused. The checksum is not a
// signature: a cursor grants nothing the filter does not already allow, so
// forging one gains a client nothing; the check exists to turn mistakes
// into clear errors instead of wrong pages.
package pagetoken

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"

	"google.golang.org/protobuf/proto"
)

const version = 1

// ErrInvalid is returned for any token that does not belong to the filter.
var ErrInvalid = errors.New("invalid page token: it must come from a previous response with the same filter")

// Encode returns the token for cursor under filter. filter is the request
// with the fields that do not select items (page_size, page_token)
// cleared.
func Encode(filter proto.Message, cursor []byte) (string, error) {
	sum, err := checksum(filter, cursor)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 0, 1+len(cursor)+len(sum))
	buf = append(buf, version)
	buf = append(buf, cursor...)
	buf = append(buf, sum...)
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

// Decode returns the cursor of token, or ErrInvalid when token was not made
// by Encode with the same filter.
func Decode(token string, filter proto.Message) ([]byte, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 1+sumLen || raw[0] != version {
		return nil, ErrInvalid
	}
	cursor := raw[1 : len(raw)-sumLen]
	want, err := checksum(filter, cursor)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(raw[len(raw)-sumLen:], want) {
		return nil, ErrInvalid
	}
	return cursor, nil
}

const sumLen = 12

func checksum(filter proto.Message, cursor []byte) ([]byte, error) {
	f, err := proto.MarshalOptions{Deterministic: true}.Marshal(filter)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	// Length-prefix the filter so filter and cursor bytes cannot trade places.
	h.Write([]byte{byte(len(f) >> 24), byte(len(f) >> 16), byte(len(f) >> 8), byte(len(f))})
	h.Write(f)
	h.Write(cursor)
	return h.Sum(nil)[:sumLen], nil
}
