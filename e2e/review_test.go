package e2e

// Defects a hostile review found in vault-init's and vault-renew's
// handling of what Vault returns, its errors and its metrics; each test
// here failed before its fix.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/e2e/testbed"
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

// initAsRoot runs vault-init for p with args, logged in with a
// rootChildToken (token auth) to read what the app policy does not allow.
func (p *pod) initAsRoot(args ...string) result {
	p.t.Helper()
	return run(p.t, "vault-init", append([]string{"--auth-method", "token", "--token-file", rootChildToken(p.t, p.dir),
		"--secrets-dir", p.secretsDir, "--state-dir", p.stateDir, "--timeout", "30s"}, args...), p.env...)
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
	writeKV(t, path, map[string]any{"pin": pin})
	r := p.initAsRoot("--secret", "kv="+path)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(testbed.ReadFile(t, filepath.Join(p.secretsDir, "kv"))), &got); err != nil {
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

// writeKV writes fields as a KV v2 secret at path with the root token.
func writeKV(t *testing.T, path string, fields map[string]any) {
	t.Helper()
	if _, err := bed.Root().Logical().WriteWithContext(context.Background(), path, map[string]any{"data": fields}); err != nil {
		t.Fatal(err)
	}
}

// TestReviewEnvMultilineWarns: an env-format secret with a PEM value is
// written (a dotenv reader gets it back) with a warning that names the
// field, and no value, since a shell would see \n instead.
func TestReviewEnvMultilineWarns(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	const path = "secret/data/review-pem"
	key := "review-pem-" + randomDigits(t, 12)
	noteSecret(key)
	writeKV(t, path, map[string]any{"tls_key": "-----BEGIN KEY-----\n" + key + "\n-----END KEY-----", "user": "u"})
	r := p.initAsRoot("--secret", "tls="+path, "--format", "tls=env")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"level=WARN", "newline", "use --format json or a --template", "secret=tls", "fields=tls_key"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	if got, want := testbed.ReadFile(t, filepath.Join(p.secretsDir, "tls")), `TLS_KEY="-----BEGIN KEY-----\n`+key+`\n-----END KEY-----"`+"\n"+`USER="u"`+"\n"; got != want {
		t.Errorf("env file differs from the two escaped lines expected")
	}
}

// TestReviewEnvRefusesDangerousField: a field that upper-cases to
// LD_PRELOAD (or PATH, BASH_ENV, ...) is refused in the env format: exit
// 1 naming the field, nothing written, the token and its leases revoked.
func TestReviewEnvRefusesDangerousField(t *testing.T) {
	t.Parallel()
	for _, field := range []string{"ld_preload", "path", "bash-env"} {
		t.Run(field, func(t *testing.T) {
			t.Parallel()
			p := newPod(t)
			path := "secret/data/review-danger-" + field
			writeKV(t, path, map[string]any{field: "/tmp/evil.so", "user": "u"})
			r := p.initAsRoot("--secret", "kv="+path, "--format", "kv=env")
			if r.code != 1 {
				t.Errorf("exit %d, want 1:\n%s", r.code, r.stderr)
			}
			for _, want := range []string{`field \"` + field + `\"`, "refuses", "json"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "evil.so") {
				t.Error("the error shows the value")
			}
			assertNothingLeft(t, p)
		})
	}
}

// TestReviewTemplateTypoExits1: a template naming a field the secret does
// not have fails after Vault was contacted, so it exits 1 (2 promises
// Vault was not contacted), names the key, and leaves no lease behind.
func TestReviewTemplateTypoExits1(t *testing.T) {
	t.Parallel()
	const role = "review-typo"
	if err := bed.CreateDBRole(role, time.Minute, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	tmpl := filepath.Join(p.dir, "db.tmpl")
	if err := os.WriteFile(tmpl, []byte("user={{ .Data.usernme }}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+role, "--template", "db="+tmpl), p.env...)
	if r.code != 1 {
		t.Errorf("exit %d, want 1:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"usernme", tmpl, `secret \"db\"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	assertNothingLeft(t, p)
	if left := leasesLeft(t, "database/creds/"+role, 5*time.Second); len(left) > 0 {
		t.Errorf("leases left after the failure: %v", left)
	}
}

// TestReviewAuthMountTypo: a login at a mount where no auth method is
// says so (Vault answers 403 there, as for refused bindings), on one line.
// A real refusal (a service account the role does not bind) still points
// at the role's bindings.
func TestReviewAuthMountTypo(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	r := run(t, "vault-init", p.initArgs("--auth-mount", "kubernets", "--secret", "db=database/creds/app"), p.env...)
	if r.code != 1 {
		t.Errorf("exit %d, want 1:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"no auth method is mounted at auth/kubernets", "--auth-mount", "permission denied (HTTP 403)"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	// Vault's "1 error occurred:\n\t* permission denied" arrives flattened.
	if strings.Contains(r.stderr, "error occurred") || strings.Contains(r.stderr, `\n`) || strings.Contains(r.stderr, `\t`) {
		t.Errorf("Vault's multi-line error was not flattened:\n%s", r.stderr)
	}
	assertNothingLeft(t, p)

	other := newPod(t)
	other.jwtFile = bed.WriteJWT(filepath.Join(other.dir, "sa"), testbed.Namespace, "not-bound")
	noteSecret(testbed.ReadFile(t, other.jwtFile))
	r = run(t, "vault-init", other.initArgs("--secret", "db=database/creds/app"), other.env...)
	if r.code != 1 || !strings.Contains(r.stderr, "check the role's bindings") || strings.Contains(r.stderr, "no auth method is mounted") {
		t.Errorf("refused bindings: exit %d, want 1 with the bindings hint:\n%s", r.code, r.stderr)
	}
}

// TestReviewInitInterrupted: SIGTERM while vault-init waits for Vault
// says "interrupted", not that Vault kept failing with "context
// canceled", and leaves nothing behind.
func TestReviewInitInterrupted(t *testing.T) {
	t.Parallel()
	fp := newFaultProxy(t)
	if err := fp.Set(testbed.Rule{Fault: testbed.Hang}); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	s := start(t, "vault-init", p.initArgs("--secret", "db=database/creds/app", "--vault-addr", fp.URL()), p.env...)
	time.Sleep(time.Second) // the login request hangs
	if took := s.stop(10 * time.Second); took > 5*time.Second {
		t.Errorf("vault-init took %s to stop after SIGTERM", took)
	}
	out := s.stderr.String()
	if code := s.exitCode(); code != 1 {
		t.Errorf("exit %d, want 1:\n%s", code, out)
	}
	if !strings.Contains(out, "log in: interrupted") || strings.Contains(out, "context canceled") || strings.Contains(out, "kept failing") {
		t.Errorf("the last line should say the login was interrupted, and not blame Vault:\n%s", out)
	}
	assertNothingLeft(t, p)
}

// TestReviewStateHoldsNothingOfTheSecret replays the attack: a 4-digit
// PIN in KV, and an attacker who reads only state.json tries all 10^4
// values against whatever state.json holds (it held a SHA-256 of the
// rendered file). Nothing may match, after vault-init and after
// vault-renew re-read the secret, changed it, and saved the state.
func TestReviewStateHoldsNothingOfTheSecret(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	const path = "secret/data/review-pin"
	pin := func() string { return "PIN-" + randomDigits(t, 4) }
	first := pin()
	noteSecret(first)
	writeKV(t, path, map[string]any{"pin": first})
	r := p.initAsRoot("--secret", "pin="+path)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	attack := func(when string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(p.stateDir, "state.json"))
		if err != nil {
			t.Fatal(err)
		}
		st := string(b)
		found := 0
		for n := range 10000 {
			guess := fmt.Sprintf("PIN-%04d", n)
			for _, candidate := range []string{"{\n  \"pin\": \"" + guess + "\"\n}\n", guess} {
				sum := sha256.Sum256([]byte(candidate))
				if strings.Contains(st, hex.EncodeToString(sum[:])) || strings.Contains(st, guess) {
					found++
				}
			}
		}
		if found > 0 {
			t.Errorf("%s: trying the 10^4 PINs against state.json matched %d times: it holds something derived from the secret", when, found)
		}
		if m := regexp.MustCompile(`[0-9a-f]{64}`).FindString(st); m != "" {
			t.Errorf("%s: state.json holds a 64-hex-digit string, a hash of something: %s...", when, m[:8])
		}
	}
	attack("after vault-init")

	second := pin()
	for second == first {
		second = pin()
	}
	noteSecret(second)
	writeKV(t, path, map[string]any{"pin": second})
	sc := startRenewSidecar(t, p, "--kv-interval", "1s")
	file := filepath.Join(p.secretsDir, "pin")
	waitUntil(t, 15*time.Second, "vault-renew to rewrite the file with the new PIN", func() bool {
		return strings.Contains(testbed.ReadFile(t, file), second)
	})
	sc.stop(10 * time.Second)
	attack("after vault-renew rewrote the file")
}

// TestReviewDocsLoginRefusals reproduces the kubernetes auth method's
// refusals against the real Vault (a projected token whose audience is not
// the role's, a service account or a namespace the role does not bind),
// and checks that docs/troubleshooting.md quotes what vault-init then
// prints, word for word.
func TestReviewDocsLoginRefusals(t *testing.T) {
	t.Parallel()
	doc := testbed.ReadFile(t, filepath.Join("..", "docs", "troubleshooting.md"))
	for _, tc := range []struct {
		name string
		tok  testbed.ServiceAccountToken
	}{
		{"wrong audience", testbed.ServiceAccountToken{Namespace: testbed.Namespace, ServiceAccount: testbed.ServiceAccount, Audiences: []string{"https://kubernetes.default.svc.cluster.local"}}},
		{"service account not bound", testbed.ServiceAccountToken{Namespace: testbed.Namespace, ServiceAccount: "not-bound"}},
		{"namespace not bound", testbed.ServiceAccountToken{Namespace: "not-bound", ServiceAccount: testbed.ServiceAccount}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPod(t)
			p.jwtFile = filepath.Join(p.dir, "sa", "refused")
			jwt := bed.SignServiceAccountToken(tc.tok)
			noteSecret(jwt)
			if err := os.WriteFile(p.jwtFile, []byte(jwt), 0o600); err != nil {
				t.Fatal(err)
			}
			r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/app"), p.env...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", r.code, r.stderr)
			}
			m := regexp.MustCompile(`log in with kubernetes auth at auth/kubernetes as role "app": (.*?) \(HTTP 403\)`).FindStringSubmatch(strings.ReplaceAll(r.stderr, `\"`, `"`))
			if m == nil {
				t.Fatalf("no refused login in the output:\n%s", r.stderr)
			}
			if !strings.Contains(doc, "`"+m[1]+" (HTTP 403)`") {
				t.Errorf("docs/troubleshooting.md does not quote what Vault 1.21 answers: %q", m[1]+" (HTTP 403)")
			}
		})
	}
}

// TestReviewDocsMemoryFigures: README and docs/renew.md quote the
// sidecar's memory from the last `make bench` (bench/results.md), and
// from nowhere else.
func TestReviewDocsMemoryFigures(t *testing.T) {
	t.Parallel()
	bench := testbed.ReadFile(t, filepath.Join("..", "bench", "results.md"))
	m := regexp.MustCompile(`\| vault-renew, renewing \(20s\) \| ([\d.]+ MiB) \(([\d.]+ MiB) \+ ([\d.]+ MiB)\)`).FindStringSubmatch(bench)
	idle := regexp.MustCompile(`\| vault-renew, idle \(1h\) \| ([\d.]+ MiB)`).FindStringSubmatch(bench)
	if m == nil || idle == nil {
		t.Fatal("bench/results.md has no vault-renew memory row")
	}
	readme := testbed.ReadFile(t, filepath.Join("..", "README.md"))
	renew := testbed.ReadFile(t, filepath.Join("..", "docs", "renew.md"))
	if !strings.Contains(readme, "vault-renew **"+m[1]+"**") {
		t.Errorf("README does not quote bench/results.md's sidecar memory, %s", m[1])
	}
	section := renew[strings.Index(renew, "## Memory"):]
	for _, want := range []string{"| " + m[1] + " | " + m[2] + " | " + m[3] + " |", "| " + idle[1] + " |", "make bench"} {
		if !strings.Contains(section, want) {
			t.Errorf("docs/renew.md's Memory section lacks %q from bench/results.md", want)
		}
	}
	// Every sidecar figure in the two documents is one bench/results.md has.
	for name, text := range map[string]string{"README.md": readme, "docs/renew.md": section} {
		for _, fig := range regexp.MustCompile(`(\d+\.\d+)(?:-\d+\.\d+)? MiB`).FindAllString(text, -1) {
			if !strings.Contains(bench, fig) {
				t.Errorf("%s quotes %q, which bench/results.md does not have", name, fig)
			}
		}
	}
}
