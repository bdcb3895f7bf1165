// Package oplog is OpLogService as a platforma binary: cmd/oplog runs it,
// and tests run it in-process.
package oplog

import (
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/lifecycle"
	"github.com/platforma/platforma/services/oplog/internal/oplogsvc"
	"github.com/platforma/platforma/services/oplog/internal/wire"
)

// Service describes the binary: ports, migrations, flags and wiring.
func Service() app.Service {
	var cfg oplogsvc.Config
	return app.Service{
		Name:               "oplog",
		DefaultListenAddr:  ":50053",
		DefaultMetricsAddr: ":9453",
		// Ingest messages are at most 1,000 rows; a smaller limit bounds
		// what each receive slot can hold.
		DefaultMaxRecvMsgBytes: 1 << 20,
		Migrations:             migrations.OpLog,
		Config:                 &cfg,
		PageTokens:             func(k *pagetoken.Keyring) { cfg.PageTokens = k },
		// Ingest reads its messages as bytes (package wire); the kit
		// server wraps the codec to refuse malformed requests.
		Codec: wire.Codec{},
		Register: func(r server.Registrar, pools db.Pools) error {
			return oplogsvc.Register(r, pools, cfg)
		},
		Commands: map[string]app.Command{"lifecycle": lifecycle.Command()},
	}
}
