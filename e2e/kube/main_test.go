// Package kube runs podlease on a real Kubernetes node: the image packed
// from the same binaries the Dockerfile builds, the manifests applied with
// `kubectl apply -k` through a small test overlay, Vault configured by
// manifests/vault/setup.sh against the real API server. The node, Vault and
// PostgreSQL are started once for the package in TestMain (see
// testbed.StartNode for how the node is built and why its pods use the host
// network) and the host is checked afterwards for anything left behind.
//
// Each scenario prints its figure as a "scenario N:" line.
package kube

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// Names of the Vault and Kubernetes objects of the scenarios.
const (
	// authMount is the node's kubernetes auth mount, as one cluster among
	// several would have it.
	authMount = "kubernetes-node"
	// workNS is the namespace of the live pods. Its pods use the host
	// network, which the restricted Pod Security profile forbids, so it
	// only warns; scenario 6 checks the unchanged manifests against
	// restricted.
	workNS = "podlease-e2e"
)

var (
	bed      *testbed.Bed
	node     *testbed.Node
	repoRoot string
	workDir  string
	vaultBin string
	// clusterEnv and secretsEnv are setup.sh's settings for the node's
	// cluster side and for the secrets side.
	clusterEnv, secretsEnv map[string]string
	nodeVault              *testbed.NodeVault
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) (code int) {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	before := testbed.TakeHostState()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	if repoRoot, err = testbed.RepoRoot(); err != nil {
		logf("kube: %v", err)
		return 1
	}
	if vaultBin, err = testbed.VaultBinary(); err != nil {
		logf("kube: %v", err)
		return 1
	}
	if workDir, err = os.MkdirTemp("", "podlease-kube-"); err != nil {
		logf("kube: %v", err)
		return 1
	}
	// PostgreSQL runs as its own OS user and must reach its subdir.
	_ = os.Chmod(workDir, 0o711)
	keep := os.Getenv("PODLEASE_KEEP_TESTBED") != ""
	defer func() {
		if node != nil {
			node.Stop()
		}
		if bed != nil {
			bed.Close()
		}
		if keep {
			logf("kube: kept %s", workDir)
		} else if err := os.RemoveAll(workDir); err != nil {
			logf("kube: remove %s: %v", workDir, err)
		}
		// Whatever the tests did, the host must be as it was.
		if diff := before.Diff(testbed.TakeHostState()); len(diff) > 0 {
			logf("kube: FAIL: the node left the host changed:\n  %s", strings.Join(diff, "\n  "))
			code = 1
			return
		}
		logf("kube: host hygiene: no process, mount, cgroup, sysctl, iptables rule or path left behind by the node")
	}()
	if err := start(ctx, logf); err != nil {
		// Never skip: a missing piece is a failure to fix (make kube-node).
		logf("kube: start: %v", err)
		return 1
	}
	return m.Run()
}

// start builds the images, starts Vault, PostgreSQL and the node, and
// configures Vault as an operator would.
func start(ctx context.Context, logf func(string, ...any)) error {
	began := time.Now()
	images, err := testbed.BuildNodeImages(ctx, filepath.Join(workDir, "images"))
	if err != nil {
		return err
	}
	logf("kube: images packed in %s", time.Since(began).Round(time.Millisecond))
	if bed, err = testbed.Start(ctx, func(f string, a ...any) { logf("testbed: "+f, a...) }); err != nil {
		return err
	}
	closeOnSignal(logf)
	if node, err = testbed.StartNode(ctx, filepath.Join(workDir, "node"), images, logf); err != nil {
		return err
	}
	if err := configureVault(ctx); err != nil {
		return err
	}
	if out, err := node.KubectlIn(ctx, []byte(namespaceYAML(workNS, "privileged", "restricted")), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	logf("kube: ready in %s", time.Since(began).Round(time.Millisecond))
	return nil
}

// closeOnSignal stops the node and the bed on SIGINT or SIGTERM, so that an
// interrupted run leaves the host clean too.
func closeOnSignal(logf func(string, ...any)) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		logf("kube: %v: stopping the node", sig)
		node.Stop()
		bed.Close()
		if os.Getenv("PODLEASE_KEEP_TESTBED") == "" {
			_ = os.RemoveAll(workDir)
		}
		os.Exit(1)
	}()
}

// configureVault configures Vault for the node as an operator would (see
// testbed.ConfigureNodeVault).
func configureVault(ctx context.Context) error {
	v, err := testbed.ConfigureNodeVault(ctx, bed, node, workDir, authMount, workNS)
	if err != nil {
		return err
	}
	nodeVault, clusterEnv, secretsEnv = v, v.ClusterEnv, v.SecretsEnv
	return nil
}

// merge returns the union of maps, later ones winning.
func merge(ms ...map[string]string) map[string]string { return testbed.MergeEnv(ms...) }

// runSetup runs manifests/vault/setup.sh PART with the root token and env.
func runSetup(ctx context.Context, part string, env map[string]string) (string, error) {
	return nodeVault.Setup(ctx, part, env)
}

// namespaceYAML is a namespace with Pod Security labels.
func namespaceYAML(name, enforce, warn string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels:
    pod-security.kubernetes.io/enforce: %s
    pod-security.kubernetes.io/warn: %s
`, name, enforce, warn)
}
