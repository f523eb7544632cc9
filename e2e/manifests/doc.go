// Package manifests tests what podlease ships besides its Go code: the
// container image's build (Dockerfile, .dockerignore), the Kubernetes
// manifests (manifests/) and the Vault setup they rely on (manifests/vault/).
//
// It lives in the e2e module, so k8s.io/api, which the tests decode the
// manifests into, stays out of the product's go.mod, and it finds Vault and
// kubectl, and starts Vault, with the test bed's code (package testbed):
// a missing binary fails the tests, it never skips them. It imports nothing
// from the product: it builds the binaries the way the Dockerfile does and
// runs them.
package manifests
