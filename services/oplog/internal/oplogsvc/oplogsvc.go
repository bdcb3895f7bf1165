// Package oplogsvc implements platforma.oplog.v1.OpLogService.
package oplogsvc

import (
	"github.com/jackc/pgx/v5/pgxpool"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/server"
)

// Server implements OpLogService. Every RPC answers UNIMPLEMENTED (the
// generated default) until the issue that defines its behaviour lands.
type Server struct {
	oplogv1.UnimplementedOpLogServiceServer
}

// Register plugs the service into a platforma server.
func Register(r server.Registrar, _ *pgxpool.Pool) error {
	oplogv1.RegisterOpLogServiceServer(r.GRPC, &Server{})
	return nil
}
