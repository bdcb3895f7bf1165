// Package profile is ProfileService as a platforma binary: cmd/profile runs
// it, and tests of other modules run it in-process.
package profile

import (
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/profilesvc"
)

// Service describes the binary: ports, migrations, flags and wiring.
func Service() app.Service {
	var cfg profilesvc.Config
	return app.Service{
		Name:               "profile",
		DefaultListenAddr:  ":50051",
		DefaultMetricsAddr: ":9451",
		Migrations:         migrations.Profile,
		Config:             &cfg,
		PageTokens:         func(k *pagetoken.Keyring) { cfg.PageTokens = k },
		Register: func(r server.Registrar, pools db.Pools) error {
			return profilesvc.Register(r, pools, cfg)
		},
	}
}
