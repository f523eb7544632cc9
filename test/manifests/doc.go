// Package manifests tests what podlease ships besides its Go code: the
// container image's build (Dockerfile, .dockerignore), the Kubernetes
// manifests (manifests/) and the Vault setup they rely on (manifests/vault/).
//
// It is a module of its own so that k8s.io/api, which the tests decode the
// manifests into, stays out of the product's go.mod. It imports nothing from
// the product: it builds the binaries the way the Dockerfile does and runs
// them.
package manifests
