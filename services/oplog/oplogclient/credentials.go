package oplogclient

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/platforma/platforma/services/kit/tlsfiles"
)

// TLSFromFiles is the dial option of a TLS connection to a platforma
// service, for Dial: caFile (PEM; empty: the system's roots) verifies the
// server; certFile and keyFile (PEM, both or neither) are the worker's
// client certificate, whose URI SAN spiffe://platforma/worker/<name> is
// its identity. The certificate is read again when its files change, so a
// renewed one is used without a restart.
//
//	creds, err := oplogclient.TLSFromFiles("ca.pem", "worker.pem", "worker-key.pem")
//	conn, err := oplogclient.Dial("oplog:50053", creds)
func TLSFromFiles(caFile, certFile, keyFile string) (grpc.DialOption, error) {
	cfg, err := tlsfiles.ClientConfig(caFile, certFile, keyFile, nil)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// BearerToken sends token (a JWT from the identity provider) as
// "authorization: Bearer <token>" with every call: how operators' tools
// authenticate (workers use a certificate). gRPC refuses to send it over
// a connection without TLS.
func BearerToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearer(token))
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
