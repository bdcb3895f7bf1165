// Command profile runs ProfileService: session-stability profiles per platform account.
//
//	profile migrate   apply the profile schema's migrations
//	profile serve     serve gRPC on LISTEN_ADDR (:50051) and /metrics on METRICS_ADDR (:9451)
package main

import (
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/profilesvc"
)

var config profilesvc.Config

var service = app.Service{
	Name:               "profile",
	DefaultListenAddr:  ":50051",
	DefaultMetricsAddr: ":9451",
	Migrations:         migrations.Profile,
	Config:             &config,
	Register: func(r server.Registrar, pool *pgxpool.Pool) error {
		return profilesvc.Register(r, pool, config)
	},
}

func main() { os.Exit(app.Main(service)) }
