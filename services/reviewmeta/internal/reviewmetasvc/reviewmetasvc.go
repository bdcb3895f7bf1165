// Package reviewmetasvc implements platforma.reviewmeta.v1.ReviewMetadataService.
package reviewmetasvc

import (
	"github.com/jackc/pgx/v5/pgxpool"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/server"
)

// Server implements ReviewMetadataService. Every RPC answers UNIMPLEMENTED (the
// generated default) until the issue that defines its behaviour lands.
type Server struct {
	reviewmetav1.UnimplementedReviewMetadataServiceServer
}

// Register plugs the service into a platforma server.
func Register(r server.Registrar, _ *pgxpool.Pool) error {
	reviewmetav1.RegisterReviewMetadataServiceServer(r.GRPC, &Server{})
	return nil
}
