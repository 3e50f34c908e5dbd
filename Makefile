# Conversa — `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/conversa
# make run talks to this machine's Postgres and Redis unless you say otherwise.
export DATABASE_URL ?= postgres://localhost:5432/conversa?sslmode=disable
export TWILIO_API_URL ?= sandbox
export TOOLS_ALLOW_PRIVATE ?= 1

.PHONY: help run build test test-short lint fmt bench chaos db-reset vulncheck console-deps console-screenshots

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build bin/conversa.
	$(GO) build -o $(BIN) ./cmd/conversa

run: build ## Run the service (migrate, HTTP on :8080, workers) with the sandbox Twilio and the offline agent.
	./$(BIN) run

test: console-deps ## Run every test against the local Postgres and Redis (the console's in Chromium).
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

# The console's browser test (cmd/conversa TestConsoleInBrowser) drives Debian's
# Chromium (apt-get install chromium) with the playwright-core its lockfile pins.
console-deps: ## Install the console browser test's pinned playwright-core (npm ci) when missing.
	@test -d webhook/console/e2e/node_modules/playwright-core || (cd webhook/console/e2e && npm ci --no-audit --no-fund)

console-screenshots: console-deps ## Refresh docs/console/*.png from the console's browser test.
	CONSOLE_SCREENSHOTS=docs/console $(GO) test -count=1 -run '^TestConsoleInBrowser$$' ./cmd/conversa

lint: ## gofmt and go vet.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet ./...

# The Go vulnerability database govulncheck reads; a mirror (https://... or
# file:///path/to/a/copy) works too.
VULNDB ?= https://vuln.go.dev

vulncheck: ## govulncheck (version pinned in go.mod) on the code and its dependencies; needs VULNDB reachable.
	$(GO) tool govulncheck -db $(VULNDB) ./...

fmt: ## Format the code.
	gofmt -w $$(git ls-files '*.go')

bench: ## Measure ingest vs the pgbench ceiling, end-to-end latency, throughput, memory, cost curve (alone on the machine; ~20 min). Report in bench/results/.
	$(GO) run ./internal/bench -out bench/results $(BENCH_FLAGS)
	$(GO) test -count=1 -run '^$$' -bench 'TurnToolRounds|KnowledgeSearch' -benchtime 3x -v ./jobs ./store

chaos: ## Full chaos run (2,000 messages, worker and serve kills, Redis outage, Twilio faults); CHAOS_PG_RESTART=1 adds a Postgres restart on a private cluster.
	CHAOS_FULL=1 CHAOS_PG_RESTART=$(CHAOS_PG_RESTART) $(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v ./internal/chaos

db-reset: ## Drop and recreate the DATABASE_URL database (asks nothing: local use only).
	./scripts/db-reset.sh
