// Command profile runs ProfileService: session-stability profiles per platform account.
//
//	profile migrate   apply the profile schema's migrations
//	profile serve     serve gRPC on LISTEN_ADDR (:50051) and /metrics on METRICS_ADDR (:9451)
package main

import (
	"os"

	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/profile"
)

func main() { os.Exit(app.Main(profile.Service())) }
