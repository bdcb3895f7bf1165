// Command oplog runs OpLogService: the operation log workers write and
// operators query.
//
//	oplog migrate   apply the oplog schema's migrations
//	oplog serve     serve gRPC on LISTEN_ADDR (:50053) and /metrics on METRICS_ADDR (:9453)
package main

import (
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/oplogsvc"
)

var config oplogsvc.Config

var service = app.Service{
	Name:               "oplog",
	DefaultListenAddr:  ":50053",
	DefaultMetricsAddr: ":9453",
	// Ingest messages are at most 1,000 rows; a smaller limit bounds what
	// each receive slot can hold.
	DefaultMaxRecvMsgBytes: 1 << 20,
	Migrations:             migrations.OpLog,
	Config:                 &config,
	GRPCOptions:            oplogsvc.GRPCOptions(),
	Register: func(r server.Registrar, pool *pgxpool.Pool) error {
		return oplogsvc.Register(r, pool, config)
	},
}

func main() { os.Exit(app.Main(service)) }
