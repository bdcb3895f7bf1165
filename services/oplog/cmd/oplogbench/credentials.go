package main

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"

	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// credentials: the servers run as in production (TLS, the worker's client
// certificate, an operator's token), with rate limits off so they do not
// cap the load.
type credentials struct {
	serveEnv []string
	relayEnv []string // oplog's mutual TLS towards ProfileService
	worker   grpc.DialOption
	operator []grpc.DialOption
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
	c := credentials{serveEnv: []string{"RATE_LIMIT_WRITES=0", "RATE_LIMIT_READS=0", "RATE_LIMIT_ADMIN=0"}}
	c.serveEnv = append(c.serveEnv, devpki.AsEnv(f.ServeFlags())...)
	c.relayEnv = devpki.AsEnv(f.RelayFlags())
	if c.worker, err = oplogclient.TLSFromFiles(f.CA, f.WorkerCert, f.WorkerKey); err != nil {
		return credentials{}, err
	}
	serverOnly, err := oplogclient.TLSFromFiles(f.CA, "", "")
	if err != nil {
		return credentials{}, err
	}
	token, err := os.ReadFile(f.OperatorToken)
	if err != nil {
		return credentials{}, err
	}
	c.operator = []grpc.DialOption{serverOnly, oplogclient.BearerToken(strings.TrimSpace(string(token)))}
	return c, nil
}
