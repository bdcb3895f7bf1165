package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/tlsfiles"
)

// The local stack runs as production does: TLS, workers with client
// certificates, operators with bearer tokens, the relay over mutual TLS,
// signed page tokens. Its credentials live in the data directory (0600).
const (
	tlsDirName        = "pki"
	pageTokenKeysFile = "page-token-keys"
)

// credentials are the stack's generated secrets.
type stackCredentials struct {
	pki           *devpki.Files
	pageTokenKeys string // file path
}

// prepareCredentials writes fresh certificates and tokens (every start:
// nothing to expire or rotate by hand) and a page-token key (once, so
// tokens survive restarts) into dir.
func prepareCredentials(dir string) (*stackCredentials, error) {
	pki, err := devpki.Generate(filepath.Join(dir, tlsDirName))
	if err != nil {
		return nil, fmt.Errorf("generate TLS certificates and tokens: %w", err)
	}
	keys := filepath.Join(dir, pageTokenKeysFile)
	if _, err := os.Stat(keys); errors.Is(err, os.ErrNotExist) {
		key, err := pagetoken.GenerateKey("dev")
		if err != nil {
			return nil, err
		}
		if err := devpki.WriteFile(keys, []byte(key+"\n")); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return &stackCredentials{pki: pki, pageTokenKeys: keys}, nil
}

// serviceEnv is what a service's `serve` gets: TLS, client CA, JWKS, the
// page-token keys (from a file, so no secret shows in ps), and for oplog
// the relay's mutual TLS towards ProfileService.
func (c *stackCredentials) serviceEnv(s service) []string {
	flags := c.pki.ServeFlags()
	if s.name == "oplog" {
		flags = append(flags, c.pki.RelayFlags()...)
	}
	return append(devpki.AsEnv(flags), "PAGE_TOKEN_KEYS_FILE="+c.pageTokenKeys)
}

// workerDialOption dials the stack as its worker (client certificate).
func (c *stackCredentials) workerDialOption() (grpc.DialOption, error) {
	cfg, err := tlsfiles.ClientConfig(c.pki.CA, c.pki.WorkerCert, c.pki.WorkerKey, nil)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// shellFunctions are grpcurl wrappers for the banner and the README: w as
// the worker, op as an operator, adm as an admin.
func (c *stackCredentials) shellFunctions(grpcurl string) []string {
	rel := func(p string) string {
		if wd, err := os.Getwd(); err == nil {
			if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
				return r
			}
		}
		return p
	}
	ca := rel(c.pki.CA)
	return []string{
		fmt.Sprintf(`w()   { %s -cacert %s -cert %s -key %s "$@"; }`, grpcurl, ca, rel(c.pki.WorkerCert), rel(c.pki.WorkerKey)),
		fmt.Sprintf(`op()  { %s -cacert %s -H "authorization: Bearer $(cat %s)" "$@"; }`, grpcurl, ca, rel(c.pki.OperatorToken)),
		fmt.Sprintf(`adm() { %s -cacert %s -H "authorization: Bearer $(cat %s)" "$@"; }`, grpcurl, ca, rel(c.pki.AdminToken)),
	}
}
