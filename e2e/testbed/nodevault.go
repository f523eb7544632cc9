package testbed

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// NodeVault is the bed's Vault configured for a Node the way the README
// tells an operator to: manifests/vault applied to the API server (the
// token reviewer), Vault's PostgreSQL user created with postgres.sql, and
// manifests/vault/setup.sh run with the real API server's address, CA and
// reviewer token. Pods of ServiceAccount app in Namespace then log in with
// `vault-init --auth-mount=AuthMount --role=app` and read
// database/creds/app.
type NodeVault struct {
	// AuthMount is the node's kubernetes auth mount, without auth/.
	AuthMount string
	// Namespace is the workload namespace setup.sh binds role app to.
	Namespace string
	// ClusterEnv and SecretsEnv are setup.sh's settings for the node's
	// cluster side and for the secrets side.
	ClusterEnv, SecretsEnv map[string]string

	bed      *Bed
	home     string
	vaultBin string
}

// ConfigureNodeVault configures bed's Vault for node, keeping the
// operator's files (reviewer token, PostgreSQL password) under dir. It
// rewrites the bed's policy app and database connection pg, as setup.sh
// does on any Vault.
func ConfigureNodeVault(ctx context.Context, bed *Bed, node *Node, dir, authMount, namespace string) (*NodeVault, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	vaultBin, err := VaultBinary()
	if err != nil {
		return nil, err
	}
	v := &NodeVault{AuthMount: authMount, Namespace: namespace, bed: bed, home: dir, vaultBin: vaultBin}
	if out, err := node.Kubectl(ctx, "apply", "-k", filepath.Join(root, "manifests", "vault")); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out)
	}
	jwt, err := reviewerJWT(ctx, node)
	if err != nil {
		return nil, err
	}
	secrets := filepath.Join(dir, "operator")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		return nil, err
	}
	jwtFile := filepath.Join(secrets, "reviewer.jwt")
	if err := os.WriteFile(jwtFile, jwt, 0o600); err != nil {
		return nil, err
	}

	pgPass := randomHex(16)
	pwFile := filepath.Join(secrets, "pg-password")
	if err := os.WriteFile(pwFile, []byte(pgPass+"\n"), 0o600); err != nil {
		return nil, err
	}
	sql, err := os.ReadFile(filepath.Join(root, "manifests", "vault", "postgres.sql"))
	if err != nil {
		return nil, err
	}
	su, err := bed.PGSuperuser(ctx)
	if err != nil {
		return nil, err
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, string(sql)); err != nil {
		return nil, fmt.Errorf("postgres.sql: %w", err)
	}
	if _, err := su.Exec(ctx, fmt.Sprintf("ALTER ROLE vault PASSWORD '%s'", pgPass)); err != nil {
		return nil, fmt.Errorf("set the vault user's password: %w", err)
	}

	v.ClusterEnv = map[string]string{
		"AUTH_MOUNT":              authMount,
		"WORKLOAD_NAMESPACE":      namespace,
		"KUBERNETES_HOST":         node.Server,
		"KUBERNETES_CA_CERT_FILE": node.CACert,
		"TOKEN_REVIEWER_JWT_FILE": jwtFile,
		"KUBERNETES_ISSUER":       node.Issuer,
	}
	v.SecretsEnv = map[string]string{
		"PG_CONNECTION_URL": "postgresql://{{username}}:{{password}}@" + bed.PGAddr + "/" + PGDatabase + "?sslmode=disable",
		"PG_PASSWORD_FILE":  pwFile,
	}
	out, err := v.Setup(ctx, "all", MergeEnv(v.ClusterEnv, v.SecretsEnv))
	if err != nil {
		return nil, err
	}
	if strings.Contains(out, pgPass) || strings.Contains(out, string(jwt)) {
		return nil, fmt.Errorf("setup.sh printed a secret")
	}
	return v, nil
}

// Setup runs manifests/vault/setup.sh PART with the root token and env.
func (v *NodeVault) Setup(ctx context.Context, part string, env map[string]string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "manifests", "vault", "setup.sh"), part)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + v.home, "VAULT_ADDR=" + v.bed.VaultAddr, "VAULT_TOKEN=" + v.bed.RootToken, "VAULT_BIN=" + v.vaultBin}
	for k, val := range env {
		cmd.Env = append(cmd.Env, k+"="+val)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("setup.sh %s: %w\n%s", part, err, out)
	}
	return string(out), nil
}

// MergeEnv returns the union of maps, later ones winning.
func MergeEnv(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// reviewerJWT waits for the token controller to fill in the reviewer's
// Secret and returns the token.
func reviewerJWT(ctx context.Context, node *Node) ([]byte, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := node.Kubectl(ctx, "-n", "vault", "get", "secret", "vault-token-reviewer", "-o", "jsonpath={.data.token}")
		if err == nil && len(out) > 0 {
			return base64.StdEncoding.DecodeString(string(out))
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("secret vault/vault-token-reviewer has no token after 60s: %v %s", err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
