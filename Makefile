# platforma — see README.md. `make run` and `make test` are all a newcomer needs.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Every Go module of the workspace (see go.work).
MODULES := gen migrations services/kit services/profile services/reviewmeta services/oplog
SERVICES := profile reviewmeta oplog
# The deployment tooling (deploy/k8s: manifest checks; deploy/images: the
# image builder) are modules outside go.work: their dependencies (k8s.io/*,
# go-containerregistry) must never change the versions the services build
# with. They read the services' sources as files, never import them.
DEPLOY_MODULES := deploy/images deploy/k8s

# Tools are installed with `go install` at pinned versions into .tools/bin, so
# nothing depends on what happens to be on the machine's PATH.
TOOLS_DIR := $(CURDIR)/.tools
TOOLS_BIN := $(TOOLS_DIR)/bin
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPCURL_VERSION := v1.9.4
# MinIO, an S3-compatible server, for the tests of S3 cold storage (see
# services/kit/miniotest). MinIO is AGPL-3.0: we only run its binary as a
# separate process in tests and never link, import or ship it; no Go module
# of this repository requires it. Building it takes several minutes.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c

BUF := $(TOOLS_BIN)/buf
PROTOC_GEN_GO := $(TOOLS_BIN)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(TOOLS_BIN)/protoc-gen-go-grpc
GRPCURL := $(TOOLS_BIN)/grpcurl

# One stamp per tool version: bumping a version reinstalls that tool.
$(TOOLS_DIR)/stamps/%:
	@mkdir -p $(TOOLS_BIN) $(@D)
	@echo "installing $*"
	@GOBIN=$(TOOLS_BIN) go install $*
	@touch $@

BUF_STAMP := $(TOOLS_DIR)/stamps/github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
PROTOC_GEN_GO_STAMP := $(TOOLS_DIR)/stamps/google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
PROTOC_GEN_GO_GRPC_STAMP := $(TOOLS_DIR)/stamps/google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
GRPCURL_STAMP := $(TOOLS_DIR)/stamps/github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
MINIO_STAMP := $(TOOLS_DIR)/stamps/github.com/minio/minio@$(MINIO_VERSION)

GEN_TOOLS := $(BUF_STAMP) $(PROTOC_GEN_GO_STAMP) $(PROTOC_GEN_GO_GRPC_STAMP)

.PHONY: help
help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-19s %s\n", $$1, $$2}'

.PHONY: tools
tools: $(GEN_TOOLS) $(GRPCURL_STAMP) $(MINIO_STAMP) ## install pinned tools into .tools/bin

.PHONY: generate
generate: $(GEN_TOOLS) ## regenerate gen/ from proto/
	$(BUF) generate

.PHONY: lint
lint: $(GEN_TOOLS) ts-deps ## buf lint and breaking, gofmt, go vet, generated code in sync (Go and TypeScript)
	$(BUF) lint
	@# Uncommitted proto changes must not break the committed contract.
	$(BUF) breaking --against '.git#ref=HEAD'
	@unformatted="$$(gofmt -l $(MODULES) $(DEPLOY_MODULES))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet $(addsuffix /...,$(addprefix ./,$(MODULES)))
	@for m in $(DEPLOY_MODULES); do (cd $$m && GOWORK=off go vet ./...) || exit 1; done
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(BUF) generate -o "$$tmp"; \
	if ! diff -r -x go.mod -x go.sum "$$tmp/gen" gen >/dev/null; then \
		echo "gen/ is out of date with proto/: run 'make generate' and commit the result"; \
		diff -r -x go.mod -x go.sum "$$tmp/gen" gen | head -40; exit 1; fi
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(BUF) generate --template $(TS_DIR)/buf.gen.yaml -o "$$tmp"; \
	if ! diff -r "$$tmp/$(TS_GEN)" $(TS_GEN) >/dev/null; then \
		echo "$(TS_GEN) is out of date with proto/: run 'make ts-generate' and commit the result"; \
		diff -r "$$tmp/$(TS_GEN)" $(TS_GEN) | head -40; exit 1; fi
	@echo "lint ok"

# Prometheus config, alert rules and their unit tests (see
# deploy/observability; the dashboard is checked by the devstack test, which
# also checks every metric the rules and the dashboard use is exported).
# promtool comes from the machine: Debian's prometheus package provides it,
# and .ci/run installs it when missing.
OBSERVABILITY := deploy/observability
PROMTOOL ?= promtool
.PHONY: check-observability
check-observability: ## promtool checks of deploy/observability and the alerts' unit tests
	@command -v $(PROMTOOL) >/dev/null 2>&1 || { \
		echo "promtool not found: apt-get install -y prometheus (Debian) provides it" >&2; exit 1; }
	$(PROMTOOL) check config $(OBSERVABILITY)/prometheus.yml
	$(PROMTOOL) check config $(OBSERVABILITY)/prometheus-k8s.yml
	$(PROMTOOL) check rules $(OBSERVABILITY)/alerts.yml
	$(PROMTOOL) test rules $(OBSERVABILITY)/alerts_test.yml
	@echo "observability ok"

# Tests of all modules in one `go test` invocation so packages run in parallel.
# Each test binary starts its own throwaway Postgres cluster (see
# services/kit/pgtest); set DATABASE_URL to use your own server instead.
.PHONY: test
test: lint check-observability check-k8s $(MINIO_STAMP) ## lint, observability and manifest checks, every module's tests with -race (fuzz seed corpora included), the TypeScript client's tests, then a short fuzz run
	go test -race -count=1 -timeout 15m $(addsuffix /...,$(addprefix ./,$(MODULES)))
	@for m in $(DEPLOY_MODULES); do (cd $$m && GOWORK=off go test -count=1 -timeout 10m ./...) || exit 1; done
	$(MAKE) --no-print-directory ts-test
	$(MAKE) --no-print-directory fuzz

# The TypeScript client (clients/ts, README "TypeScript"): an npm workspace
# whose lockfile pins everything, protoc-gen-es included (buf runs it as a
# local plugin from node_modules, so generation stays offline like gen/'s).
# Its tests run the built binaries through `devstack -json` on a throwaway
# Postgres. Node 20+ and npm come from the machine (.ci/run installs
# Debian's when missing).
TS_DIR := clients/ts
TS_PKG := $(TS_DIR)/packages/oplog-client
TS_GEN := $(TS_PKG)/src/gen
NPM ?= npm

# npm ci again only when the lockfile changed since the last install.
$(TS_DIR)/node_modules/.package-lock.json: $(TS_DIR)/package-lock.json $(TS_DIR)/package.json $(TS_PKG)/package.json
	@command -v $(NPM) >/dev/null 2>&1 || { echo "npm not found: install Node.js 20+ (Debian/Ubuntu: apt-get install -y nodejs npm)" >&2; exit 1; }
	cd $(TS_DIR) && $(NPM) ci --no-audit --no-fund
	@touch $@

.PHONY: ts-deps
ts-deps: $(TS_DIR)/node_modules/.package-lock.json ## install the TypeScript workspace's pinned packages (npm ci)

.PHONY: ts-generate
ts-generate: $(BUF_STAMP) ts-deps ## regenerate clients/ts's TypeScript from proto/
	rm -rf $(TS_GEN)
	$(BUF) generate --template $(TS_DIR)/buf.gen.yaml

.PHONY: ts-build
ts-build: ts-deps ## type-check and compile the TypeScript client to dist/
	cd $(TS_DIR) && $(NPM) run --silent build

.PHONY: ts-test
ts-test: build ts-build ## the TypeScript client's tests (node --test) against the built binaries
	@go build -o bin/devstack ./services/kit/cmd/devstack
	cd $(TS_DIR) && PLATFORMA_BIN=$(CURDIR)/bin $(NPM) test --silent

.PHONY: bench-ts
bench-ts: build ts-build ## the TypeScript client: log()'s cost, events/s from Node and from the Go SDK to one server, RSS with a full buffer
	@go build -o bin/devstack ./services/kit/cmd/devstack
	@go build -o bin/oplogbench ./services/oplog/cmd/oplogbench
	cd $(TS_PKG) && PLATFORMA_BIN=$(CURDIR)/bin node bench/bench.mjs

# Kubernetes manifests (deploy/k8s): kubectl renders every overlay, as a
# user applies them. deploy/k8s's Go tests (run by `make test`) render them
# too, with the same kustomize library, and validate every object against
# the pinned k8s.io/api types and our policies.
K8S_OVERLAYS := dev/bootstrap dev/migrate dev prod/bootstrap prod/migrate prod prod-gitops
KUBECTL ?= kubectl
.PHONY: check-k8s
check-k8s: ## kubectl kustomize renders every overlay of deploy/k8s
	@if ! command -v $(KUBECTL) >/dev/null 2>&1; then \
		echo "kubectl not found: the overlays are rendered by deploy/k8s's Go tests (the kustomize library) only" >&2; exit 0; fi; \
	for o in $(K8S_OVERLAYS); do \
		$(KUBECTL) kustomize deploy/k8s/overlays/$$o >/dev/null || { echo "kubectl kustomize deploy/k8s/overlays/$$o failed" >&2; exit 1; }; \
		echo "rendered deploy/k8s/overlays/$$o"; done

# Container images (README "Deploying"): the three services built static
# and packed into image tarballs by deploy/images' mkimage, with no Docker
# daemon, no base image and no network; the same commit gives the same
# images, byte for byte. check-images loads each tarball, compares the
# binary in it with the one built, and runs it as the image's user.
IMAGES_DIR := .build/images
IMAGE_TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_PORTS_profile := 50051,9451
IMAGE_PORTS_reviewmeta := 50052,9452
IMAGE_PORTS_oplog := 50053,9453
.PHONY: images
images: ## OCI image tarballs of the three services in .build/images (no Docker needed)
	@mkdir -p $(IMAGES_DIR)/bin
	@GOWORK=off go build -C deploy/images -o $(CURDIR)/$(IMAGES_DIR)/mkimage ./cmd/mkimage
	@epoch="$$(git log -1 --format=%ct 2>/dev/null || echo 0)"; \
	for s in $(SERVICES); do \
		CGO_ENABLED=0 go build -trimpath -ldflags='-s -w -buildid=' -o $(IMAGES_DIR)/bin/$$s ./services/$$s/cmd/$$s || exit 1; \
		case $$s in profile) ports=$(IMAGE_PORTS_profile);; reviewmeta) ports=$(IMAGE_PORTS_reviewmeta);; oplog) ports=$(IMAGE_PORTS_oplog);; esac; \
		$(IMAGES_DIR)/mkimage -binary $(IMAGES_DIR)/bin/$$s -image platforma/$$s:$(IMAGE_TAG) -port $$ports \
			-created "$$epoch" -revision "$$(git rev-parse HEAD 2>/dev/null)" -out $(IMAGES_DIR)/$$s.tar || exit 1; \
		echo "wrote $(IMAGES_DIR)/$$s.tar (platforma/$$s:$(IMAGE_TAG))"; \
	done

.PHONY: check-images
check-images: images ## check the image tarballs: blobs, the binary inside, static, non-root, runs as its user
	@GOWORK=off go build -C deploy/images -o $(CURDIR)/$(IMAGES_DIR)/checkimage ./cmd/checkimage
	@for s in $(SERVICES); do \
		$(IMAGES_DIR)/checkimage -tarball $(IMAGES_DIR)/$$s.tar -binary $(IMAGES_DIR)/bin/$$s -image platforma/$$s:$(IMAGE_TAG) || exit 1; \
	done

# Fault injection (README "Guarantees"): the built binaries run as processes
# against throwaway clusters while SDK producers log, and each test breaks
# something on purpose (kill -9, Postgres restarts, SIGTERM, lost answers,
# the database down for 20 s, ProfileService killed, the relay killed
# mid-delivery), then checks every entry by id. The package carries the build
# tag `faults`, so `make test` and `make lint`'s go vet never compile it;
# this target vets it. About 4 minutes on two cores. FAULTS_RUN=<regexp>
# runs only the matching scenarios. The failover scenarios (TestFailover*)
# need Patroni and etcd, so they are skipped here and run by test-ha.
FAULTS_RUN ?= .
.PHONY: test-faults
test-faults: build ## fault-injection suite: services killed and cut off under load, every entry checked
	go vet -tags faults ./services/oplog/faults/
	FAULTS_BIN=$(CURDIR)/bin go test -tags faults -count=1 -timeout 30m -v -run '$(FAULTS_RUN)' -skip '^TestFailover' ./services/oplog/faults/

# High availability (README "High availability"): the services on a local
# three-node Patroni cluster (etcd, synchronous_mode_strict, then async for
# comparison), the leader's postmaster killed with -9 under load, every
# entry checked. Needs patroni and etcd (apt-get install patroni
# etcd-server) and fails without them. About 1 minute.
.PHONY: test-ha
test-ha: build ## failover under load on a 3-node Patroni cluster (needs patroni, etcd)
	@command -v patroni >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1 || { \
		echo "test-ha: patroni and etcd are required (Debian/Ubuntu: apt-get install -y --no-install-recommends patroni etcd-server)" >&2; exit 1; }
	go vet -tags faults ./services/oplog/faults/
	FAULTS_BIN=$(CURDIR)/bin go test -tags faults -count=1 -timeout 10m -v -run '^TestFailover' ./services/oplog/faults/

# Fuzzing: every Fuzz target of the workspace's packages, found in their
# _test.go files, one at a time for FUZZTIME each (go test -fuzz takes one
# target of one package). Seed corpora are committed in each package's
# testdata/fuzz/<FuzzName>/ and run by plain `go test` too; an input that
# fails is written there, to be committed as a regression case.
# The budget is a count of executions, not a duration: a duration-bounded
# run can fail with a bare "context deadline exceeded" when its deadline
# races a busy worker in Go's fuzz coordinator (go.dev/issue/75804), and
# a count also keeps the run's coverage the same on slow and fast machines.
# For a longer hunt: make fuzz FUZZTIME=5m.
FUZZTIME ?= 20000x
.PHONY: fuzz
fuzz: ## short fuzz run of every fuzz target
	@for dir in $$(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' $(MODULES) | xargs -r -n1 dirname | sort -u); do \
		for name in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -d' ' -f2 | sort -u); do \
			echo "fuzz $$name ./$$dir ($(FUZZTIME))"; \
			go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$dir || exit 1; \
		done; \
	done

# Benchmarks: each prints ns/op and its own figures (ops/s, p50/p99). One
# package at a time, so benchmarks do not compete for the two cores.
BENCH_COUNT ?= 1
BENCH_PACKAGES := ./services/profile/internal/profilesvc/ ./services/reviewmeta/internal/reviewmetasvc/
.PHONY: bench
bench: bench-oplog bench-sdk bench-queries ## run all benchmarks (several minutes; BENCH_COUNT=3 repeats each)
	@for p in $(BENCH_PACKAGES); do \
		go test -run '^$$' -bench . -benchtime 5s -count $(BENCH_COUNT) -timeout 90m $$p || exit 1; done

.PHONY: bench-oplog
bench-oplog: build ## OpLog write path end to end: raw COPY vs SDK to server to Postgres, server RSS
	@go build -o bin/oplogbench ./services/oplog/cmd/oplogbench
	@if [ -n "$(BASELINE_REV)" ]; then \
		rm -rf .tools/baseline && git worktree add --detach .tools/baseline $(BASELINE_REV) >/dev/null && \
		(cd .tools/baseline && go build -o $(CURDIR)/bin/oplog-baseline ./services/oplog/cmd/oplog); \
		git worktree remove --force .tools/baseline; fi
	bin/oplogbench ingest -server bin/oplog $(if $(BASELINE_REV),-baseline bin/oplog-baseline)
	bin/oplogbench indexes -duration 10s -rounds 3

.PHONY: bench-sdk
bench-sdk: build ## the worker SDK: batching at a steady 6,000 entries/s, Log's cost, the spool's write and replay rates
	@go build -o bin/oplogbench ./services/oplog/cmd/oplogbench
	bin/oplogbench steady -server bin/oplog -clients 4 -rate 6000 -duration 30s
	go test -run '^$$' -bench 'BenchmarkLog|BenchmarkSpool' -benchtime 2s -count $(BENCH_COUNT) ./services/oplog/oplogclient/

.PHONY: bench-queries
bench-queries: build ## OpLog queries on 10M rows: RPCs against raw SQL over the log
	@go build -o bin/oplogbench ./services/oplog/cmd/oplogbench
	bin/oplogbench queries -server bin/oplog

.PHONY: bench-replicas
bench-replicas: build ## OpLog ingest through 1, 2 and 3 replicas on one database, with each side's CPU
	@go build -o bin/oplogbench ./services/oplog/cmd/oplogbench
	bin/oplogbench replicas -server bin/oplog -clients 8 -duration 20s

.PHONY: bench-lifecycle
bench-lifecycle: build ## OpLog life cycle on a 10M-row month: export rate and RSS, Parquet size, ingest while archiving, drop
	@go build -o bin/oplogbench ./services/oplog/cmd/oplogbench
	bin/oplogbench lifecycle -server bin/oplog -rows $(or $(LIFECYCLE_ROWS),10000000) -clients 4 -duration 60s -export-from $(or $(LIFECYCLE_EXPORT_FROM),primary)

.PHONY: bench-watch
bench-watch: ## WatchProfileChanges: RecordLoginResult with transitions against without (same run), delivery latency at 64 writers
	go test -run '^$$' -bench 'BenchmarkRecordTransitions' -benchtime 20000x -count $(BENCH_COUNT) -timeout 30m ./services/profile/internal/store/
	go test -run '^$$' -bench 'BenchmarkWatchDeliveryLatency' -benchtime 10000x -count $(BENCH_COUNT) -timeout 30m ./services/profile/internal/profilesvc/

.PHONY: build
build: ## build bin/profile, bin/reviewmeta, bin/oplog
	@mkdir -p bin
	@for s in $(SERVICES); do go build -o bin/$$s ./services/$$s/cmd/$$s; done
	@echo "built $(addprefix bin/,$(SERVICES))"

# run: the whole stack. Without DATABASE_URL a local cluster lives in .data/.
# Ports: PG_PORT, and PROFILE_GRPC_PORT, PROFILE_METRICS_PORT, REVIEWMETA_...,
# OPLOG_... (README "Two commands"). devstack exits non-zero, having stopped
# what it started, unless its own processes serve on them.
.PHONY: run
run: build $(GRPCURL_STAMP) ## local Postgres + all three services; Ctrl-C stops everything
	@go build -o bin/devstack ./services/kit/cmd/devstack
	@bin/devstack -bin bin -data .data -grpcurl $(GRPCURL)

# run-ha: the whole stack on a throwaway local 3-node Patroni cluster
# (etcd + Patroni, synchronous_mode_strict) through the multi-host
# DATABASE_URL; Ctrl-C stops the services, then the cluster. Needs patroni
# and etcd. HASTACK_FLAGS=-async for asynchronous replication, -keep to keep
# the cluster's directory.
.PHONY: run-ha
run-ha: build $(GRPCURL_STAMP) ## the stack on a local 3-node Patroni cluster (synchronous replication); Ctrl-C stops everything
	@go build -o bin/devstack ./services/kit/cmd/devstack
	@go build -o bin/hastack ./services/kit/cmd/hastack
	@bin/hastack -bin bin -grpcurl $(GRPCURL) $(HASTACK_FLAGS)

.PHONY: clean
clean: ## remove build output (keeps .data, .tools and clients/ts/node_modules)
	rm -rf bin .build $(TS_PKG)/dist
