package e2e

// Defects a hostile review found in vault-init's and vault-renew's
// handling of what Vault returns, its errors and its metrics; each test
// here failed before its fix.

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/vault/api"
)

// rootChildToken writes a token with the root policy, valid for the test,
// to a file in dir and returns the file: for reads the bed's app policy
// does not allow.
func rootChildToken(t *testing.T, dir string) string {
	t.Helper()
	s, err := bed.Root().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"root"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	tok := s.Auth.ClientToken
	noteSecret(tok)
	t.Cleanup(func() { bed.Root().Auth().Token().RevokeTree(tok) })
	file := filepath.Join(dir, "root-token")
	if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestReviewKVUnderStaticCredsPath: a KV v2 secret whose path contains
// /static-creds/ is KV data (what Vault returned says so), and its file
// holds the fields, not the {data, metadata} envelope.
func TestReviewKVUnderStaticCredsPath(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	const path = "secret/data/static-creds/review"
	pin := "pin-" + randomDigits(t, 12)
	noteSecret(pin)
	if _, err := bed.Root().Logical().WriteWithContext(context.Background(), path, map[string]any{"data": map[string]any{"pin": pin}}); err != nil {
		t.Fatal(err)
	}
	r := run(t, "vault-init", []string{"--auth-method", "token", "--token-file", rootChildToken(t, p.dir),
		"--secret", "kv=" + path, "--secrets-dir", p.secretsDir, "--state-dir", p.stateDir, "--timeout", "30s"}, p.env...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(p.secretsDir, "kv"))), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["pin"] != pin {
		t.Errorf("the file holds fields %v, want only \"pin\" (the KV v2 inner data)", keys(got))
	}
}

// randomDigits is n random decimal digits, a PIN-like secret value.
func randomDigits(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = '0' + byte(rand.IntN(10))
	}
	return string(b)
}
