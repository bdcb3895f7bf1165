// Command reviewmeta runs ReviewMetadataService: platform-specific review metadata and reply tracking.
//
//	reviewmeta migrate   apply the reviewmeta schema's migrations
//	reviewmeta serve     serve gRPC on LISTEN_ADDR (:50052) and /metrics on METRICS_ADDR (:9452)
package main

import (
	"os"

	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/reviewmeta"
)

func main() { os.Exit(app.Main(reviewmeta.Service())) }
