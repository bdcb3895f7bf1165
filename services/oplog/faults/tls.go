//go:build faults

package faults

import (
	"os"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// The services run as in production: TLS, workers with client
// certificates, the relay over mutual TLS. One set of credentials serves
// the whole suite (the scenarios run one after another).
var (
	pkiOnce  sync.Once
	pkiFiles *devpki.Files
	pkiErr   error
)

func suitePKI(t *testing.T) *devpki.Files {
	t.Helper()
	pkiOnce.Do(func() {
		dir, err := os.MkdirTemp("", "faults-pki-")
		if err != nil {
			pkiErr = err
			return
		}
		pkiFiles, pkiErr = devpki.Generate(dir, replicaHosts...)
	})
	if pkiErr != nil {
		t.Fatalf("test credentials: %v", pkiErr)
	}
	return pkiFiles
}

// replicaHosts are the names and addresses the replicas scenario
// (replicas_test.go) reaches servers by, besides localhost: in the servers'
// certificate, as a cluster's DNS names would be.
var replicaHosts = []string{oplogName, profileName, "127.0.0.2", "127.0.0.3"}

// serveEnv is what every `serve` needs for TLS and authentication.
func serveEnv(t *testing.T) []string { return devpki.AsEnv(suitePKI(t).ServeFlags()) }

// relayEnv is what oplog needs to call ProfileService over mutual TLS.
func relayEnv(t *testing.T) []string { return devpki.AsEnv(suitePKI(t).RelayFlags()) }

// workerCreds dial a service as the suite's worker (client certificate).
func workerCreds(t *testing.T) grpc.DialOption {
	t.Helper()
	f := suitePKI(t)
	creds, err := oplogclient.TLSFromFiles(f.CA, f.WorkerCert, f.WorkerKey)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}
