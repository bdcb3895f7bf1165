// Package pagetoken makes the opaque page tokens of keyset pagination.
//
// A token carries the position after the last item of a page (the
// cursor, encoded by the service) and an HMAC-SHA256 over the cursor, the
// request's filter and the id of the key that made it. Only a holder of a
// key of the Keyring can make a token the Keyring accepts: a token made
// without the key, signed by a key the ring no longer holds, used with a
// different filter, truncated or edited is refused with ErrInvalid.
//
// The MAC proves that the server made the token for this filter; it does
// not make the cursor's content right for the request. Services still
// check the decoded cursor against the request's limits on every page
// (defence in depth, and a guard against tokens made by an older release).
//
// Token layout, before base64url (no padding):
//
//	version (1 byte, 2) | len(kid) (1 byte) | kid | cursor | HMAC-SHA256 (32 bytes)
//
// The HMAC is keyed with the secret of kid and covers, in order: the
// version, len(kid) and kid, the filter message's full name and its
// deterministic protobuf encoding (each with a 4-byte length), then the
// cursor. Every variable part but the last is length-prefixed, so no two
// different (kid, filter, cursor) have the same MAC input. Version 1
// tokens (an unkeyed SHA-256 checksum) are refused.
package pagetoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"unicode"

	"google.golang.org/protobuf/proto"
)

const (
	version = 2
	macLen  = sha256.Size

	// MinKeyBytes is the shortest secret a Keyring accepts.
	MinKeyBytes = 32
	// MaxKeyIDBytes is the longest key id.
	MaxKeyIDBytes = 32
	// MaxCursorBytes is the longest cursor Encode takes; Decode refuses
	// longer tokens before doing any work.
	MaxCursorBytes = 256

	maxRawLen   = 2 + MaxKeyIDBytes + MaxCursorBytes + macLen
	maxTokenLen = (maxRawLen*8 + 5) / 6 // base64 without padding

	// EphemeralKeyID is the key id of NewRandomKeyring's key.
	EphemeralKeyID = "ephemeral"
)

// tokenEncoding is base64url without padding; strict, so that unused
// trailing bits must be zero.
var tokenEncoding = base64.RawURLEncoding.Strict()

// ErrInvalid is returned for any token that does not belong to the filter.
var ErrInvalid = errors.New("invalid page token: it must come from a previous response with the same filter")

// Key is one key of a Keyring: an id, written into every token it signs,
// and a secret of at least MinKeyBytes. Its String and GoString never show
// the secret.
type Key struct {
	ID     string
	Secret []byte
}

// String shows the id, never the secret.
func (k Key) String() string { return k.ID + ":[REDACTED]" }

// GoString is String for %#v.
func (k Key) GoString() string { return fmt.Sprintf("pagetoken.Key{ID: %q, Secret: [REDACTED]}", k.ID) }

// Keyring signs page tokens with its first key and verifies them with any
// of its keys, so keys can be rotated: add the new key after the current
// one on every replica, then move it first (it signs from then on), then,
// once tokens signed by the old key no longer matter (pagination
// sessions are short), remove the old one. It is safe for concurrent use.
type Keyring struct {
	signer *ringKey
	byID   map[string]*ringKey
	ids    []string
}

type ringKey struct {
	id     string
	secret []byte
	// states are *macState: hmac.New hashes the key's pads each time,
	// a reused HMAC only resets.
	states sync.Pool
}

// macState is an HMAC of one key and a buffer for its input.
type macState struct {
	h   hash.Hash
	buf []byte
}

// NewKeyring returns a ring of keys; the first signs. Key ids must be
// unique and valid (ValidKeyID), secrets at least MinKeyBytes long. The
// secrets are copied.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	r := &Keyring{byID: make(map[string]*ringKey, len(keys))}
	for i, k := range keys {
		if err := ValidKeyID(k.ID); err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		if _, dup := r.byID[k.ID]; dup {
			return nil, fmt.Errorf("key %d: key id %q given twice", i+1, k.ID)
		}
		if len(k.Secret) < MinKeyBytes {
			return nil, fmt.Errorf("key %d (%q): %d bytes, want at least %d", i+1, k.ID, len(k.Secret), MinKeyBytes)
		}
		rk := &ringKey{id: k.ID, secret: append([]byte(nil), k.Secret...)}
		r.byID[k.ID] = rk
		r.ids = append(r.ids, k.ID)
		if r.signer == nil {
			r.signer = rk
		}
	}
	return r, nil
}

// ParseKeyring parses ParseKeys' format into a Keyring.
func ParseKeyring(spec string) (*Keyring, error) {
	keys, err := ParseKeys(spec)
	if err != nil {
		return nil, err
	}
	return NewKeyring(keys...)
}

// ParseKeys reads keys written as kid:base64secret, separated by commas or
// white space (so a file may hold one per line), e.g.
// "2025b:q83v...,2025a:7Hk2...". The secret may be standard or URL-safe
// base64, with or without padding, and must decode to at least
// MinKeyBytes. Errors name the entry and its key id, never the secret.
func ParseKeys(spec string) ([]Key, error) {
	entries := strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(entries) == 0 {
		return nil, errors.New("no keys")
	}
	keys := make([]Key, 0, len(entries))
	for i, e := range entries {
		id, b64, ok := strings.Cut(e, ":")
		if !ok {
			return nil, fmt.Errorf("key %d: want kid:base64key", i+1)
		}
		if err := ValidKeyID(id); err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		secret, err := decodeSecret(b64)
		if err != nil {
			return nil, fmt.Errorf("key %d (%q): the key is not base64", i+1, id)
		}
		if len(secret) < MinKeyBytes {
			return nil, fmt.Errorf("key %d (%q): %d bytes, want at least %d (e.g. head -c32 /dev/urandom | base64)", i+1, id, len(secret), MinKeyBytes)
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	return keys, nil
}

func decodeSecret(s string) ([]byte, error) {
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		var b []byte
		if b, err = enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, err
}

// ValidKeyID reports what is wrong with a key id: it must be 1 to
// MaxKeyIDBytes of A-Z, a-z, 0-9, '.', '_' and '-'.
func ValidKeyID(id string) error {
	if id == "" || len(id) > MaxKeyIDBytes {
		return fmt.Errorf("key id must be 1 to %d characters", MaxKeyIDBytes)
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("key id %q: only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// NewRandomKeyring returns a ring of one random key (id EphemeralKeyID):
// for a process that has no configured keys. Its tokens are refused by
// every other process, including this one after a restart.
func NewRandomKeyring() *Keyring {
	r, err := NewKeyring(Key{ID: EphemeralKeyID, Secret: randomSecret()})
	if err != nil {
		panic(err) // cannot happen: a valid id and a long enough secret
	}
	return r
}

// GenerateKey returns a new random key in ParseKeys' format: kid, a colon
// and 32 random bytes in standard base64.
func GenerateKey(kid string) (string, error) {
	if err := ValidKeyID(kid); err != nil {
		return "", err
	}
	return kid + ":" + base64.StdEncoding.EncodeToString(randomSecret()), nil
}

func randomSecret() []byte {
	b := make([]byte, MinKeyBytes)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program instead
	return b
}

// SigningKeyID is the id of the key that signs.
func (r *Keyring) SigningKeyID() string { return r.signer.id }

// KeyIDs are the ids of the ring's keys, the signing key first.
func (r *Keyring) KeyIDs() []string { return append([]string(nil), r.ids...) }

// String names the keys, never their secrets.
func (r *Keyring) String() string {
	return "pagetoken.Keyring{" + strings.Join(r.ids, ",") + "}"
}

// GoString is String: %#v shows no secret either.
func (r *Keyring) GoString() string { return r.String() }

// Encode returns the token for cursor under filter, signed by the ring's
// first key. filter is the request with the fields that do not select
// items (page_size, page_token) cleared.
func (r *Keyring) Encode(filter proto.Message, cursor []byte) (string, error) {
	if len(cursor) > MaxCursorBytes {
		return "", fmt.Errorf("page token cursor of %d bytes, at most %d", len(cursor), MaxCursorBytes)
	}
	k := r.signer
	raw := make([]byte, 0, 2+len(k.id)+len(cursor)+macLen)
	raw = append(raw, version, byte(len(k.id)))
	raw = append(raw, k.id...)
	raw = append(raw, cursor...)
	raw, err := k.sum(raw, filter, cursor)
	if err != nil {
		return "", err
	}
	return tokenEncoding.EncodeToString(raw), nil
}

// Decode returns the cursor of token, or ErrInvalid when token was not made
// by Encode of a key of the ring with the same filter. The MACs are
// compared in constant time.
func (r *Keyring) Decode(token string, filter proto.Message) ([]byte, error) {
	if len(token) > maxTokenLen {
		return nil, ErrInvalid
	}
	raw, err := tokenEncoding.DecodeString(token)
	// The length check refuses the line breaks the decoder skips: one
	// token has one spelling.
	if err != nil || tokenEncoding.EncodedLen(len(raw)) != len(token) || len(raw) < 2+1+macLen || raw[0] != version {
		return nil, ErrInvalid
	}
	idLen := int(raw[1])
	if idLen == 0 || idLen > MaxKeyIDBytes || len(raw) < 2+idLen+macLen {
		return nil, ErrInvalid
	}
	k, ok := r.byID[string(raw[2:2+idLen])]
	if !ok {
		return nil, ErrInvalid
	}
	end := len(raw) - macLen
	cursor, got := raw[2+idLen:end:end], raw[end:]
	want, err := k.sum(make([]byte, 0, macLen), filter, cursor)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(got, want) {
		return nil, ErrInvalid
	}
	return cursor, nil
}

// sum appends the MAC of (kid, filter, cursor) under k to dst.
func (k *ringKey) sum(dst []byte, filter proto.Message, cursor []byte) ([]byte, error) {
	st, _ := k.states.Get().(*macState)
	if st == nil {
		st = &macState{h: hmac.New(sha256.New, k.secret), buf: make([]byte, 0, 256)}
	}
	defer k.states.Put(st)
	name := filter.ProtoReflect().Descriptor().FullName()
	b := append(st.buf[:0], version, byte(len(k.id)))
	b = append(b, k.id...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = append(b, 0, 0, 0, 0) // the filter's length, known once marshalled
	at := len(b)
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(b, filter)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b[at-4:at], uint32(len(b)-at))
	b = append(b, cursor...)
	if cap(b) <= 4<<10 {
		st.buf = b // keep a grown buffer, unless a huge filter grew it
	}
	st.h.Reset()
	st.h.Write(b)
	return st.h.Sum(dst), nil
}
