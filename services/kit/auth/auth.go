// Package auth authenticates, authorizes, rate-limits and audits the calls
// of every platforma server, in one place:
//
//   - who: a verified client certificate with a SPIFFE ID
//     (spiffe://platforma/worker/<name> → role worker,
//     spiffe://platforma/service/<name> → role service), or a bearer JWT
//     in the `authorization` metadata (operators), verified against a JWKS
//     (file or URL, refreshed on its own), its issuer, audience and expiry,
//     with its roles from a claim. A token, when present, decides: an
//     invalid one is UNAUTHENTICATED even on a connection with a valid
//     certificate.
//   - may it: one table (Methods) maps every full method name to the
//     roles that may call it; PERMISSION_DENIED names the method and the
//     roles it needs.
//   - how often: a token bucket per caller and method class (write, read,
//     admin); RESOURCE_EXHAUSTED with google.rpc.RetryInfo.
//   - what it read: operators' and admins' reads of the operation log and
//     the profiles leave one audit line each.
//
// Health and reflection are public. Credentials never reach a log line or
// an error message.
package auth

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Config configures Auth.
type Config struct {
	// Methods is the method table; nil means Methods, the platform's.
	Methods Table
	// JWT verifies bearer tokens; nil: tokens are refused (callers
	// authenticate with certificates only).
	JWT *JWTConfig
	// RateLimits per caller and class; the zero value limits nothing.
	RateLimits RateLimits
	// Logger gets the audit lines and the JWKS's refresh problems.
	Logger *slog.Logger
}

// Auth is the authentication, authorization, rate limiting and audit of
// one server. Its interceptors go inside logging and metrics (so refusals
// are logged and counted) and before the handler.
type Auth struct {
	table   Table
	jwt     *verifier
	limiter *limiter
	certs   certCache
	log     *slog.Logger
}

// New builds an Auth. ctx bounds the JWKS's background refresh: cancel it
// when the server stops.
func New(ctx context.Context, cfg Config) (*Auth, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Auth{table: cfg.Methods, limiter: newLimiter(cfg.RateLimits), certs: certCache{m: map[string]*Identity{}}, log: log}
	if a.table == nil {
		a.table = Methods
	}
	if cfg.JWT != nil {
		v, err := newVerifier(ctx, *cfg.JWT, log)
		if err != nil {
			return nil, err
		}
		a.jwt = v
	}
	return a, nil
}

// Check fails when the table and the server's services disagree (see
// Table.Check). Servers call it once everything is registered.
func (a *Auth) Check(services map[string]grpc.ServiceInfo) error {
	return a.table.Check(services)
}

// --- the call's caller, for its log line ----------------------------------

type callInfoKey struct{}

type callInfo struct{ subject string }

// WithCallInfo prepares ctx to learn the caller of the call, once
// authenticated, for interceptors outside this package's (the log line):
// see Caller.
func WithCallInfo(ctx context.Context) context.Context {
	return context.WithValue(ctx, callInfoKey{}, &callInfo{})
}

// Caller is the subject of the call's authenticated caller, "" when there
// is none (yet); ctx must come from WithCallInfo.
func Caller(ctx context.Context) string {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return ci.subject
	}
	return ""
}

// --- interceptors ---------------------------------------------------------

// UnaryServerInterceptor authenticates, authorizes and rate-limits unary
// calls; the handler's context carries the Identity (FromContext).
func (a *Auth) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		rule, ok := a.table[info.FullMethod]
		if ok && rule.Public {
			return handler(ctx, req)
		}
		id, err := a.admit(ctx, info.FullMethod, rule, ok)
		if err != nil {
			return nil, err
		}
		return handler(NewContext(ctx, id), req)
	}
}

// AuditUnaryServerInterceptor writes the audit line of a unary call. It
// goes after UnaryServerInterceptor and after the request is known to be
// well-formed.
func (a *Auth) AuditUnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if a.table[info.FullMethod].Audit {
			if id := FromContext(ctx); id != nil && id.Roles.Any(operators) {
				a.audit(ctx, id, info.FullMethod, req)
			}
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams; an
// audited stream is audited with its first request message.
func (a *Auth) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		rule, ok := a.table[info.FullMethod]
		if ok && rule.Public {
			return handler(srv, ss)
		}
		id, err := a.admit(ss.Context(), info.FullMethod, rule, ok)
		if err != nil {
			return err
		}
		s := &identityStream{ServerStream: ss, ctx: NewContext(ss.Context(), id)}
		if rule.Audit && id.Roles.Any(operators) {
			s.audit = func(m any) { a.audit(s.ctx, id, info.FullMethod, m) }
		}
		return handler(srv, s)
	}
}

type identityStream struct {
	grpc.ServerStream
	ctx   context.Context
	audit func(m any) // once, with the first message
}

func (s *identityStream) Context() context.Context { return s.ctx }

func (s *identityStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && s.audit != nil {
		s.audit(m)
		s.audit = nil
	}
	return err
}

// admit is authentication, authorization and the rate limit of one call.
func (a *Auth) admit(ctx context.Context, method string, rule Rule, known bool) (*Identity, error) {
	id, err := a.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		ci.subject = id.Subject
	}
	name := strings.TrimPrefix(method, "/")
	if !known {
		return nil, status.Errorf(codes.PermissionDenied, "%s has no rule in the method table: nobody may call it", name)
	}
	if !id.Roles.Any(rule.Roles) {
		return nil, status.Errorf(codes.PermissionDenied, "%s needs the role %s; %s has %s",
			name, strings.Join(rule.Roles.Names(), " or "), id.Subject, id.Roles)
	}
	if ok, wait := a.limiter.allow(id.Subject, rule.Class); !ok {
		lim := a.limiter.limits.of(rule.Class)
		st := status.Newf(codes.ResourceExhausted, "rate limit of %s for %s calls (%s a second, bursts of %d) exceeded; retry in %s",
			id.Subject, rule.Class, formatRate(lim.Rate), lim.Burst, wait.Round(time.Millisecond))
		if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
			st = d
		}
		return nil, st.Err()
	}
	return id, nil
}

func formatRate(r float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", r), "0"), ".")
}

// authenticate: the bearer token when there is an authorization header,
// else the verified client certificate.
func (a *Auth) authenticate(ctx context.Context) (*Identity, error) {
	if vals := metadata.ValueFromIncomingContext(ctx, "authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return nil, status.Error(codes.Unauthenticated, "more than one authorization header")
		}
		scheme, token, ok := strings.Cut(vals[0], " ")
		token = strings.TrimSpace(token)
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			return nil, status.Error(codes.Unauthenticated, `the authorization header must be "Bearer <token>"`)
		}
		if a.jwt == nil {
			return nil, status.Error(codes.Unauthenticated, "bearer tokens are not accepted: this server has no JWKS (use a client certificate)")
		}
		id, err := a.jwt.verify(ctx, token)
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		return id, nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			id, err := a.certs.identity(ti.State.VerifiedChains[0][0])
			if err != nil {
				return nil, status.Error(codes.Unauthenticated, err.Error())
			}
			return id, nil
		}
	}
	return nil, status.Error(codes.Unauthenticated,
		"no credentials: present a client certificate (spiffe://platforma/worker/<name> or /service/<name>) or an authorization: Bearer <token> header")
}

// --- audit -----------------------------------------------------------------

// audit writes the line of one operator read: who, which method, which
// filter (the request as JSON, without its page token).
func (a *Auth) audit(ctx context.Context, id *Identity, method string, req any) {
	a.log.LogAttrs(ctx, slog.LevelInfo, "audit",
		slog.String("audit.subject", id.Subject),
		slog.String("audit.via", id.Via),
		slog.String("audit.roles", id.Roles.String()),
		slog.String("grpc.method", strings.TrimPrefix(method, "/")),
		slog.String("audit.filter", filterJSON(req)),
	)
}

// filterJSON is the request as JSON without page_token.
func filterJSON(req any) string {
	m, ok := req.(proto.Message)
	if !ok {
		return fmt.Sprintf("(%T)", req)
	}
	if f := m.ProtoReflect().Descriptor().Fields().ByName("page_token"); f != nil && m.ProtoReflect().Has(f) {
		m = proto.Clone(m)
		m.ProtoReflect().Clear(f)
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return "(unprintable: " + err.Error() + ")"
	}
	return string(b)
}
