package main

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// transport is how a server under test is run and reached: its
// environment, and the dial options of a worker and of an operator.
type transport struct {
	name     string
	serveEnv []string
	worker   []grpc.DialOption
	operator []grpc.DialOption
}

// credentials: the servers run as in production (secured: TLS, the
// worker's client certificate, an operator's token) or, to measure what
// that costs, plaintext with bearer tokens only. Rate limits are off in
// both, so they do not cap the load, and page tokens have a fixed key.
type credentials struct {
	secured   transport
	plaintext transport
	relayEnv  []string // oplog's mutual TLS towards ProfileService
}

var (
	credsOnce sync.Once
	creds     credentials
)

func benchCredentials() credentials {
	credsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oplogbench-pki-")
		if err == nil {
			creds, err = newCredentials(dir)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench: credentials:", err)
			os.Exit(1)
		}
	})
	return creds
}

func newCredentials(dir string) (credentials, error) {
	f, err := devpki.Generate(dir)
	if err != nil {
		return credentials{}, err
	}
	readToken := func(file string) (string, error) {
		b, err := os.ReadFile(file)
		return strings.TrimSpace(string(b)), err
	}
	operatorToken, err := readToken(f.OperatorToken)
	if err != nil {
		return credentials{}, err
	}
	workerToken, err := readToken(f.WorkerToken)
	if err != nil {
		return credentials{}, err
	}
	pageKey, err := pagetoken.GenerateKey("bench")
	if err != nil {
		return credentials{}, err
	}
	noLimits := []string{"RATE_LIMIT_WRITES=0", "RATE_LIMIT_READS=0", "RATE_LIMIT_ADMIN=0", "PAGE_TOKEN_KEYS=" + pageKey}
	jwt := []string{"-jwks-file=" + f.JWKS, "-jwt-issuer=" + f.Issuer, "-jwt-audience=" + f.Audience}

	c := credentials{relayEnv: devpki.AsEnv(f.RelayFlags())}
	c.secured = transport{name: "TLS, client certificates", serveEnv: append(noLimits, devpki.AsEnv(f.ServeFlags())...)}
	workerTLS, err := oplogclient.TLSFromFiles(f.CA, f.WorkerCert, f.WorkerKey)
	if err != nil {
		return credentials{}, err
	}
	serverOnly, err := oplogclient.TLSFromFiles(f.CA, "", "")
	if err != nil {
		return credentials{}, err
	}
	c.secured.worker = []grpc.DialOption{workerTLS}
	c.secured.operator = []grpc.DialOption{serverOnly, oplogclient.BearerToken(operatorToken)}

	// Plaintext cannot carry client certificates, so the worker sends a
	// token with the worker role instead (the SDK's BearerToken insists on
	// TLS; devpki.Bearer does not).
	plain := grpc.WithTransportCredentials(insecure.NewCredentials())
	c.plaintext = transport{
		name:     "plaintext, bearer tokens",
		serveEnv: append(append(append([]string{}, noLimits...), "INSECURE=true"), devpki.AsEnv(jwt)...),
		worker:   []grpc.DialOption{plain, grpc.WithPerRPCCredentials(devpki.Bearer{Token: workerToken})},
		operator: []grpc.DialOption{plain, grpc.WithPerRPCCredentials(devpki.Bearer{Token: operatorToken})},
	}
	return c, nil
}
