package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
)

// No migrations in the template: the test runs the binary's own migrate.
func TestMain(m *testing.M) { pgtest.Main(m) }

func TestBinaryMigratesAndServes(t *testing.T) {
	grpcService := profilev1.ProfileService_ServiceDesc.ServiceName
	s := apptest.Start(t, service, grpcService)

	assert.Contains(t, apptest.ListServices(t, s.Conn), grpcService, "reflection lists the service")
	assert.Contains(t, apptest.Scrape(t, s.MetricsAddr), `grpc_server_started_total{grpc_method=`)

	// Not built yet: answers UNIMPLEMENTED rather than pretending.
	ctx := context.Background()
	_, err := profilev1.NewProfileServiceClient(s.Conn).GetProfile(ctx, &profilev1.GetProfileRequest{})
	assert.Equal(t, codes.Unimplemented, status.Code(err))
}
