// Package reviewmeta is ReviewMetadataService as a platforma binary:
// cmd/reviewmeta runs it, and tests of other modules run it in-process.
package reviewmeta

import (
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/reviewmeta/internal/reviewmetasvc"
)

// Service describes the binary: ports, migrations and wiring.
func Service() app.Service {
	var cfg reviewmetasvc.Config
	return app.Service{
		Name:               "reviewmeta",
		DefaultListenAddr:  ":50052",
		DefaultMetricsAddr: ":9452",
		Migrations:         migrations.ReviewMeta,
		PageTokens:         func(k *pagetoken.Keyring) { cfg.PageTokens = k },
		// No read replica: the reply worker's queue is its list, and it
		// must read what it just wrote.
		Register: func(r server.Registrar, pools db.Pools) error {
			return reviewmetasvc.Register(r, pools.Primary, cfg)
		},
	}
}
