# syntax=docker/dockerfile:1
#
# One image holding podlease's three static binaries, on a distroless base
# with no shell: /usr/local/bin/vault-init, vault-renew and vault-revoke.
# The manifests call each one by that absolute path.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t podlease .
#
# e2e/manifests/dockerfile_test.go runs the build line below exactly as
# written (only the output directory differs) and checks that the binaries
# are static and print --version; change one, the test follows.

ARG GO_VERSION=1.25

# The builder runs on the build machine's platform and cross-compiles to the
# target's, so a multi-platform build needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, as a layer of their own: it is rebuilt only when go.mod or
# go.sum change, not on every source edit.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/podlease/podlease/internal/version.Version=${VERSION}" \
      -o /out/ ./cmd/vault-init ./cmd/vault-renew ./cmd/vault-revoke

# distroless static: CA certificates, /etc/passwd with nonroot, tzdata, and
# nothing else (no shell, no package manager).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="podlease" \
      org.opencontainers.image.description="Per-pod, short-lived Vault credentials: vault-init, vault-renew and vault-revoke" \
      org.opencontainers.image.source="https://github.com/podlease/podlease" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/ /usr/local/bin/
# Numeric, so the kubelet can check runAsNonRoot without a passwd lookup.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vault-init"]
