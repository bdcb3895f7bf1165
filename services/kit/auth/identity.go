package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"sync"
)

// TrustDomain is the SPIFFE trust domain of platforma's certificates.
const TrustDomain = "platforma"

// How a caller proved who it is.
const (
	ViaCertificate = "certificate"
	ViaToken       = "token"
)

// Identity is an authenticated caller.
type Identity struct {
	// Subject names the caller: the certificate's SPIFFE ID
	// (spiffe://platforma/worker/scraper-7), or the token's "sub" claim.
	Subject string
	// Via is ViaCertificate or ViaToken.
	Via string
	// Roles are what it may do.
	Roles Roles
}

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext is the caller of a call that passed authentication; nil for
// public methods.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}

// SPIFFEID is the SPIFFE ID of a platforma identity: kind "worker" or
// "service" and a name.
func SPIFFEID(kind, name string) string {
	return "spiffe://" + TrustDomain + "/" + kind + "/" + name
}

var errNoSPIFFEID = errors.New("the client certificate has no URI SAN spiffe://" + TrustDomain + "/worker/<name> or spiffe://" + TrustDomain + "/service/<name>")

// certIdentity is the identity of a verified client certificate: its one
// SPIFFE ID (URI SAN) spiffe://platforma/worker/<name> gives the role
// worker, spiffe://platforma/service/<name> the role service. The common
// name is not used: a certificate without such a URI SAN authenticates
// nobody.
func certIdentity(leaf *x509.Certificate) (*Identity, error) {
	var found *url.URL
	for _, u := range leaf.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if found != nil {
			return nil, errors.New("the client certificate has more than one SPIFFE ID")
		}
		found = u
	}
	if found == nil || found.Host != TrustDomain || found.User != nil || found.RawQuery != "" || found.Fragment != "" {
		return nil, errNoSPIFFEID
	}
	kind, name, ok := strings.Cut(strings.TrimPrefix(found.Path, "/"), "/")
	if !ok || !validName(name) {
		return nil, errNoSPIFFEID
	}
	var role Role
	switch kind {
	case "worker":
		role = Worker
	case "service":
		role = Service
	default:
		return nil, errNoSPIFFEID
	}
	return &Identity{Subject: SPIFFEID(kind, name), Via: ViaCertificate, Roles: Roles(role)}, nil
}

// validName: letters, digits, '.', '-', '_'; 1 to 128 of them.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// certCache keeps the identities of the certificates seen lately, by
// their signature (which covers everything the identity is read from), so
// that the calls of one connection share one Identity. A chain is only
// looked up once TLS has verified it.
type certCache struct {
	mu sync.RWMutex
	m  map[string]*Identity
}

// certCacheSize bounds the cache; when full it starts over.
const certCacheSize = 4096

func (c *certCache) identity(leaf *x509.Certificate) (*Identity, error) {
	c.mu.RLock()
	id := c.m[string(leaf.Signature)]
	c.mu.RUnlock()
	if id != nil {
		return id, nil
	}
	id, err := certIdentity(leaf)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= certCacheSize {
		clear(c.m)
	}
	c.m[string(leaf.Signature)] = id
	c.mu.Unlock()
	return id, nil
}
