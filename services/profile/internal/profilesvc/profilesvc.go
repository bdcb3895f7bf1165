// Package profilesvc implements platforma.profile.v1.ProfileService.
package profilesvc

import (
	"github.com/jackc/pgx/v5/pgxpool"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/server"
)

// Server implements ProfileService. Every RPC answers UNIMPLEMENTED (the
// generated default) until the issue that defines its behaviour lands.
type Server struct {
	profilev1.UnimplementedProfileServiceServer
}

// Register plugs the service into a platforma server.
func Register(r server.Registrar, _ *pgxpool.Pool) error {
	profilev1.RegisterProfileServiceServer(r.GRPC, &Server{})
	return nil
}
