// Command oplog runs OpLogService: the operation log workers write and
// operators query.
//
//	oplog migrate   apply the oplog schema's migrations
//	oplog serve     serve gRPC on LISTEN_ADDR (:50053) and /metrics on METRICS_ADDR (:9453)
package main

import (
	"os"

	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/oplog"
)

func main() { os.Exit(app.Main(oplog.Service())) }
