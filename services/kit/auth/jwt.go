package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Algorithms are the only JWT signature algorithms accepted: asymmetric
// ones, so nothing a server holds can mint tokens. "none" and the HMAC
// algorithms are refused.
var Algorithms = []string{"RS256", "ES256", "EdDSA"}

// JWTConfig is how bearer tokens are verified.
type JWTConfig struct {
	// The JWKS (RFC 7517 key set) that verifies signatures: exactly one
	// of a file, an http(s) URL, or the JSON itself (in-process servers
	// and tests).
	JWKSFile string
	JWKSURL  string
	JWKS     []byte
	// Issuer and Audience the tokens' "iss" and "aud" must match.
	Issuer   string
	Audience string
	// RolesClaim is the claim holding the roles, a dotted path into
	// nested objects (realm_access.roles); "roles" when empty. Its value
	// is an array of role names or one string of space-separated names.
	RolesClaim string
	// RefreshInterval is how often the JWKS is read again (DefaultJWKSRefresh
	// when zero). A token signed with a key id the set does not have
	// triggers a refresh at once, at most every unknownKIDInterval.
	RefreshInterval time.Duration
	// HTTPClient fetches JWKSURL (default: 10 s timeout).
	HTTPClient *http.Client
}

// DefaultJWKSRefresh is the default JWTConfig.RefreshInterval.
const DefaultJWKSRefresh = time.Minute

const (
	// leeway absorbs clock skew between the issuer and the servers for
	// exp, nbf and iat.
	leeway = 30 * time.Second
	// unknownKIDInterval bounds the refreshes that tokens with unknown
	// key ids can cause.
	unknownKIDInterval = 5 * time.Second
	// tokenCacheTTL is how long a verified token is trusted without
	// verifying it again (never beyond its exp): also how long a key
	// removed from the JWKS keeps verifying tokens it signed.
	tokenCacheTTL = 30 * time.Second
	// tokenCacheSize bounds the cache.
	tokenCacheSize = 10000
)

// verifier checks bearer tokens.
type verifier struct {
	keys   *keyStore
	kf     keyfunc.Keyfunc
	parser *jwt.Parser
	claim  []string
	log    *slog.Logger
	now    func() time.Time
	cache  tokenCache
	// noCache verifies every token (benchmarks).
	noCache bool
}

func newVerifier(ctx context.Context, cfg JWTConfig, log *slog.Logger) (*verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("a JWKS needs the issuer and the audience the tokens must name")
	}
	keys, err := newKeyStore(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := keys.refresh(ctx); err != nil {
		if cfg.JWKSURL == "" {
			return nil, err
		}
		// The identity provider may be down while we start; workers
		// (certificates) need not wait for it. Retried every interval
		// and for every unknown key id.
		log.Warn("auth: the JWKS could not be fetched; bearer tokens fail until it is", "url", cfg.JWKSURL, "error", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: keys})
	if err != nil {
		return nil, err
	}
	claim := cfg.RolesClaim
	if claim == "" {
		claim = "roles"
	}
	v := &verifier{
		keys:  keys,
		kf:    kf,
		claim: strings.Split(claim, "."),
		log:   log,
		now:   time.Now,
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(Algorithms),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	)
	v.cache.entries = map[[32]byte]cachedToken{}
	interval := cfg.RefreshInterval
	if interval <= 0 {
		interval = DefaultJWKSRefresh
	}
	go keys.refreshEvery(ctx, interval)
	return v, nil
}

// verify returns the identity of a token, or an error saying why it is
// refused (safe to show the client: it never contains the token).
func (v *verifier) verify(ctx context.Context, raw string) (*Identity, error) {
	sum := hashToken(raw)
	now := v.now()
	if id, ok := v.cache.get(sum, now); ok && !v.noCache {
		return id, nil
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(raw, claims, v.kf.KeyfuncCtx(ctx)); err != nil {
		return nil, tokenError(err)
	}
	sub, _ := claims.GetSubject()
	if sub == "" {
		return nil, errors.New("invalid bearer token: no subject (sub)")
	}
	id := &Identity{Subject: sub, Via: ViaToken, Roles: v.roles(claims)}
	until := now.Add(tokenCacheTTL)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil && exp.Before(until) {
		until = exp.Time
	}
	v.cache.put(sum, cachedToken{id: id, until: until})
	return id, nil
}

// roles reads the roles claim; unknown names are ignored.
func (v *verifier) roles(claims jwt.MapClaims) Roles {
	var cur any = map[string]any(claims)
	for _, key := range v.claim {
		m, ok := cur.(map[string]any)
		if !ok {
			return 0
		}
		cur = m[key]
	}
	var names []string
	switch val := cur.(type) {
	case string:
		names = strings.Fields(val)
	case []any:
		for _, n := range val {
			if s, ok := n.(string); ok {
				names = append(names, s)
			}
		}
	}
	var roles Roles
	for _, n := range names {
		if r, ok := ParseRole(n); ok {
			roles |= Roles(r)
		}
	}
	return roles
}

// tokenError says why a token was refused, without repeating any of it.
func tokenError(err error) error {
	reason := "not verified"
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		reason = "malformed"
	case errors.Is(err, jwt.ErrTokenExpired):
		reason = "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		reason = "not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		reason = "issued by another issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		reason = "meant for another audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		reason = "a required claim (exp, iss, aud) is missing"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		reason = "signature not verified (unknown key, or an algorithm other than " + strings.Join(Algorithms, ", ") + ")"
	}
	return errors.New("invalid bearer token: " + reason)
}

// --- verified tokens ---------------------------------------------------

type cachedToken struct {
	id    *Identity
	until time.Time
}

// tokenCache holds verified tokens by their SHA-256 (never the tokens),
// at most tokenCacheSize; when full, entries are dropped at random.
type tokenCache struct {
	mu      sync.RWMutex
	entries map[[32]byte]cachedToken
}

func (c *tokenCache) get(sum [32]byte, now time.Time) (*Identity, bool) {
	c.mu.RLock()
	e, ok := c.entries[sum]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.id, true
}

func (c *tokenCache) put(sum [32]byte, e cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= tokenCacheSize {
		// Expired ones first would need a scan; dropping a tenth at
		// random (map order) is O(1) per entry and good enough: a dropped
		// token is verified again.
		n := tokenCacheSize / 10
		for k := range c.entries {
			delete(c.entries, k)
			if n--; n == 0 {
				break
			}
		}
	}
	c.entries[sum] = e
}

// --- the key set -------------------------------------------------------

// keyStore is the JWKS in memory, read again from its source every
// interval and when a token names a key id it does not have.
type keyStore struct {
	*jwkset.MemoryJWKSet
	source     string // for log lines
	load       func(ctx context.Context) ([]byte, error)
	log        *slog.Logger
	unknownKID *rate.Limiter
	refreshMu  sync.Mutex
	gen        atomic.Uint64 // successful refreshes
}

func newKeyStore(cfg JWTConfig, log *slog.Logger) (*keyStore, error) {
	s := &keyStore{
		MemoryJWKSet: jwkset.NewMemoryStorage(),
		log:          log,
		unknownKID:   rate.NewLimiter(rate.Every(unknownKIDInterval), 1),
	}
	given := 0
	if cfg.JWKSFile != "" {
		given++
		s.source = cfg.JWKSFile
		s.load = func(context.Context) ([]byte, error) { return os.ReadFile(cfg.JWKSFile) }
	}
	if cfg.JWKSURL != "" {
		given++
		s.source = cfg.JWKSURL
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		s.load = func(ctx context.Context) ([]byte, error) { return fetch(ctx, client, cfg.JWKSURL) }
	}
	if cfg.JWKS != nil {
		given++
		s.source = "(in memory)"
		raw := cfg.JWKS
		s.load = func(context.Context) ([]byte, error) { return raw, nil }
	}
	if given != 1 {
		return nil, errors.New("give exactly one JWKS: a file, a URL or the JSON")
	}
	return s, nil
}

func fetch(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// parseJWKS keeps the set's public signature keys of the kinds the
// accepted algorithms use (RSA, EC, OKP); private parts are ignored.
func parseJWKS(raw []byte) ([]jwkset.JWK, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	var keys []jwkset.JWK
	for i, m := range set.Keys {
		switch m.KTY {
		case jwkset.KtyRSA, jwkset.KtyEC, jwkset.KtyOKP:
		default:
			continue
		}
		if m.USE != "" && m.USE != jwkset.UseSig {
			continue
		}
		k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, m.KID, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("the JWKS has no RSA, EC or OKP signature key")
	}
	return keys, nil
}

// refresh reads the set again; on failure the keys loaded before stay.
func (s *keyStore) refresh(ctx context.Context) error {
	raw, err := s.load(ctx)
	if err != nil {
		return fmt.Errorf("JWKS %s: %w", s.source, err)
	}
	keys, err := parseJWKS(raw)
	if err != nil {
		return fmt.Errorf("JWKS %s: %w", s.source, err)
	}
	if err := s.KeyReplaceAll(ctx, keys); err != nil {
		return err
	}
	s.gen.Add(1)
	return nil
}

func (s *keyStore) refreshEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.refreshMu.Lock()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.refresh(rctx)
		cancel()
		s.refreshMu.Unlock()
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("auth: JWKS refresh failed; keeping the keys loaded before", "error", err)
			failing = true
		case err == nil && failing:
			s.log.Info("auth: JWKS refreshed again", "source", s.source)
			failing = false
		}
	}
}

// KeyRead is the key with id kid; an unknown id makes the set be read
// again first (at most every unknownKIDInterval; concurrent callers wait
// for the one refresh), so keys an issuer just rotated in verify at once.
func (s *keyStore) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	k, err := s.MemoryJWKSet.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return k, err
	}
	gen := s.gen.Load()
	s.refreshMu.Lock()
	if s.gen.Load() == gen && s.unknownKID.Allow() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if rerr := s.refresh(rctx); rerr != nil {
			s.log.WarnContext(ctx, "auth: JWKS refresh for an unknown key id failed", "error", rerr)
		}
		cancel()
	}
	s.refreshMu.Unlock()
	return s.MemoryJWKSet.KeyRead(ctx, kid)
}

// hashToken is the SHA-256 of a token. The token's bytes are hashed in
// place (read only), not copied: a copy is an allocation per call.
func hashToken(raw string) [32]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}
