SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/podlease/podlease/internal/version.Version=$(VERSION)
BINARIES := vault-init vault-renew vault-revoke
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"

.PHONY: help build demo test unit e2e kube manifests fuzz bench image testbed vault postgres node lint fmt clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build the three static binaries into bin/
	@mkdir -p bin
	@for b in $(BINARIES); do $(GO_BUILD) -o bin/$$b ./cmd/$$b; done
	@ls -l $(addprefix bin/,$(BINARIES))

test: vault postgres node lint unit e2e kube manifests ## the one test command: lint, unit tests, end-to-end tests on a real Vault, PostgreSQL and Kubernetes node

unit: ## unit tests of the product module
	go test -race -count=1 ./...

e2e: vault postgres ## end-to-end tests: the built binaries against real Vault and PostgreSQL
	cd e2e && PODLEASE_VAULT_BIN="$(CURDIR)/bin/vault" go test -count=1 -timeout 20m $$(go list ./... | grep -vE '/e2e/(kube|manifests)$$')

kube: vault postgres node ## scenarios on a real Kubernetes node: the image, the manifests, Vault set up by setup.sh (needs root)
	cd e2e && PODLEASE_VAULT_BIN="$(CURDIR)/bin/vault" PODLEASE_KUBE_BIN_DIR="$(CURDIR)/bin/kubernetes" \
	  go test -count=1 -timeout 30m -v ./kube 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'

demo: vault postgres build ## play one pod's life on this machine: init, renew, rotation, revocation (about 1 min)
	cd e2e && PODLEASE_VAULT_BIN="$(CURDIR)/bin/vault" go run ./cmd/demo --bin-dir "$(CURDIR)/bin"

fuzz: ## run every fuzz target for FUZZTIME each (default 30s; not part of test)
	@scripts/fuzz.sh

bench: vault postgres node ## compare with Vault Agent and the floor, as processes and as pods on a real node (about 4.5 min, needs root; not part of test; BENCH_FLAGS=--only=kube or --only=local for one part); writes bench/results.md
	cd e2e && PODLEASE_VAULT_BIN="$(CURDIR)/bin/vault" PODLEASE_KUBE_BIN_DIR="$(CURDIR)/bin/kubernetes" go run ./cmd/bench $(BENCH_FLAGS)

testbed: vault postgres ## run the test bed (Vault, PostgreSQL, Kubernetes stand-ins) until Ctrl-C, to try the binaries by hand
	cd e2e && PODLEASE_VAULT_BIN="$(CURDIR)/bin/vault" go run ./cmd/testbed

manifests: vault ## image build check, manifest and Vault-setup tests (e2e/manifests; kubectl from bin/kubernetes, else PATH)
	cd e2e && PODLEASE_VAULT_BIN="$(CURDIR)/bin/vault" go test -count=1 -timeout 15m ./manifests

image: ## build the container image (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD) -t podlease:$(VERSION) .

vault: ## make sure bin/vault is a Vault dev server (PATH, cache, or built from the Go module)
	@scripts/ensure-vault.sh

postgres: ## make sure Debian's PostgreSQL server is installed
	@scripts/ensure-postgres.sh

node: ## make sure the Kubernetes node's parts are here: containerd, runc, etcd, CNI (Debian) and the Kubernetes commands (built from the Go module once: 15-45 min on two busy cores)
	@scripts/ensure-node.sh
	@scripts/ensure-kubernetes.sh

lint: ## gofmt, go vet and staticcheck on every module
	@out=$$(gofmt -l . | grep -v '^tools/' || true); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd e2e && go vet ./...
	go run $(STATICCHECK) ./...
	cd e2e && go run $(STATICCHECK) ./...

clean: ## remove build output (the cached Vault and Kubernetes builds outside the clone stay)
	rm -rf bin dist
