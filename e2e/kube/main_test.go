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
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
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

// configureVault does what the README tells an operator: apply
// manifests/vault (the token reviewer), create Vault's PostgreSQL user with
// postgres.sql, and run setup.sh with the real API server's address, CA
// and reviewer token.
func configureVault(ctx context.Context) error {
	if out, err := node.Kubectl(ctx, "apply", "-k", filepath.Join(repoRoot, "manifests", "vault")); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	jwt, err := reviewerJWT(ctx)
	if err != nil {
		return err
	}
	secrets := filepath.Join(workDir, "operator")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		return err
	}
	jwtFile := filepath.Join(secrets, "reviewer.jwt")
	if err := os.WriteFile(jwtFile, jwt, 0o600); err != nil {
		return err
	}

	pgPass := randomWord()
	pwFile := filepath.Join(secrets, "pg-password")
	if err := os.WriteFile(pwFile, []byte(pgPass+"\n"), 0o600); err != nil {
		return err
	}
	sql, err := os.ReadFile(filepath.Join(repoRoot, "manifests", "vault", "postgres.sql"))
	if err != nil {
		return err
	}
	su, err := bed.PGSuperuser(ctx)
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, string(sql)); err != nil {
		return fmt.Errorf("postgres.sql: %w", err)
	}
	if _, err := su.Exec(ctx, fmt.Sprintf("ALTER ROLE vault PASSWORD '%s'", pgPass)); err != nil {
		return fmt.Errorf("set the vault user's password: %w", err)
	}

	clusterEnv = map[string]string{
		"AUTH_MOUNT":              authMount,
		"WORKLOAD_NAMESPACE":      workNS,
		"KUBERNETES_HOST":         node.Server,
		"KUBERNETES_CA_CERT_FILE": node.CACert,
		"TOKEN_REVIEWER_JWT_FILE": jwtFile,
		"KUBERNETES_ISSUER":       node.Issuer,
	}
	secretsEnv = map[string]string{
		"PG_CONNECTION_URL": "postgresql://{{username}}:{{password}}@" + bed.PGAddr + "/" + testbed.PGDatabase + "?sslmode=disable",
		"PG_PASSWORD_FILE":  pwFile,
	}
	out, err := runSetup(ctx, "all", merge(clusterEnv, secretsEnv))
	if err != nil {
		return err
	}
	if strings.Contains(out, pgPass) || strings.Contains(out, string(jwt)) {
		return fmt.Errorf("setup.sh printed a secret")
	}
	return nil
}

// merge returns the union of maps, later ones winning.
func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// runSetup runs manifests/vault/setup.sh PART with the root token and env.
func runSetup(ctx context.Context, part string, env map[string]string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "manifests", "vault", "setup.sh"), part)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + workDir, "VAULT_ADDR=" + bed.VaultAddr, "VAULT_TOKEN=" + bed.RootToken, "VAULT_BIN=" + vaultBin}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("setup.sh %s: %w\n%s", part, err, out)
	}
	return string(out), nil
}

// reviewerJWT waits for the token controller to fill in the reviewer's
// Secret and returns the token.
func reviewerJWT(ctx context.Context) ([]byte, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := node.Kubectl(ctx, "-n", "vault", "get", "secret", "vault-token-reviewer", "-o", "jsonpath={.data.token}")
		if err == nil && len(out) > 0 {
			return base64.StdEncoding.DecodeString(string(out))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("secret vault/vault-token-reviewer has no token after 60s: %v %s", err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
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
