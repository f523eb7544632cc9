package e2e

// The state dir as an attacker and an operator meet it (docs/state.md):
// what state.json holds of a secret, a state dir tampered with, state.json
// damaged under a running sidecar, a second sidecar on the same dir.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// TestStateHoldsNothingOfTheSecret replays the attack: a 4-digit
// PIN in KV, and an attacker who reads only state.json tries all 10^4
// values against whatever state.json holds (it held a SHA-256 of the
// rendered file). Nothing may match, after vault-init and after
// vault-renew re-read the secret, changed it, and saved the state.
func TestStateHoldsNothingOfTheSecret(t *testing.T) {
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

// TestRevokeOnExitWithoutStateFile: state.json renamed away, deleted or
// corrupted under a running sidecar is not a revocation; on SIGTERM,
// --revoke-on-exit revokes what the sidecar holds: 0 leases and 0
// database users left.
func TestRevokeOnExitWithoutStateFile(t *testing.T) {
	t.Parallel()
	type damage struct {
		name string
		do   func(dir string) error
	}
	cases := []damage{
		{"renamed away", func(dir string) error {
			return os.Rename(filepath.Join(dir, state.FileName), filepath.Join(dir, "gone.json"))
		}},
		{"deleted", func(dir string) error { return os.Remove(filepath.Join(dir, state.FileName)) }},
		{"corrupt", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, state.FileName), []byte("{garbage"), 0o600)
		}},
		{"token and state deleted", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, state.TokenName)); err != nil {
				return err
			}
			return os.Remove(filepath.Join(dir, state.FileName))
		}},
	}
	var mu sync.Mutex
	clean := 0
	concurrently(t, cases, func(c damage) string { return c.name }, func(t *testing.T, c damage) {
		role := "hr-gone-" + strings.ReplaceAll(c.name, " ", "-")
		if err := bed.CreateDBRole(role, time.Hour, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		p := newPod(t)
		p.mustInit("--secret", "db=database/creds/"+role)
		user, _ := dbCreds(t, filepath.Join(p.secretsDir, "db"))
		sc := startRenewSidecar(t, p, "--revoke-on-exit")
		if err := c.do(p.stateDir); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if code, _ := httpGet(t, sc.url+"/readyz"); code != 200 {
			t.Errorf("/readyz = %d after state.json was %s; want 200: that is not a revocation", code, c.name)
		}
		sc.mustExitPromptly(t)
		logs := sc.stderr.String()
		if strings.Contains(logs, "vault-revoke ran") || strings.Contains(logs, "nothing to revoke") {
			t.Errorf("the sidecar took a damaged state for a revocation:\n%s", logs)
		}
		left := leasesLeft(t, "database/creds/"+role, 5*time.Second)
		if len(left) > 0 {
			t.Errorf("leases left after --revoke-on-exit: %v", left)
		}
		exists := dbRoleExists(t, user)
		if exists {
			t.Errorf("database user %s still exists after --revoke-on-exit", user)
		}
		if !t.Failed() {
			mu.Lock()
			clean++
			mu.Unlock()
		}
	})
	figure(t, "hostile-review", "--revoke-on-exit with state.json renamed away, deleted, corrupt, or deleted with the token: %d/%d left 0 leases and 0 database users", clean, len(cases))
}

// recorder is a listener that counts what reaches it: a stand-in for an
// attacker's server named as vault_addr.
type recorder struct {
	addr string
	mu   sync.Mutex
	seen []string // request headers and bodies
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{addr: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		rec.mu.Lock()
		rec.seen = append(rec.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("X-Vault-Token")+" "+string(b))
		rec.mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return rec
}

func (r *recorder) holds(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.seen {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

// TestTamperedStateDir: the state dir is the trust boundary. A symlinked
// token or token.pending, a state.json of another user, or one naming
// another secrets dir, must not make podlease send a file's content to a
// server of the attacker's choosing, write or delete files elsewhere.
func TestTamperedStateDir(t *testing.T) {
	t.Parallel()
	rootOnly := filepath.Join(t.TempDir(), "root-only")
	const rootSecret = "root-only-content-7f3a9c"
	if err := os.WriteFile(rootOnly, []byte(rootSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	type tamper struct {
		name string
		// do tampers with an initialised pod whose state.json names the
		// recorder as vault_addr; it returns a file that must survive.
		do      func(t *testing.T, p *pod) string
		renew   string // vault-renew's error
		revoke  string // vault-revoke's error; "" means exit 0
		revoked bool   // vault-revoke still revokes the lease in Vault
	}
	cases := []tamper{
		{name: "token is a symlink to a root-only file", do: func(t *testing.T, p *pod) string {
			tok := filepath.Join(p.stateDir, state.TokenName)
			os.Remove(tok)
			if err := os.Symlink(rootOnly, tok); err != nil {
				t.Fatal(err)
			}
			return ""
		}, renew: "is a symlink", revoke: "is a symlink"},
		{name: "state.json owned by another user", do: func(t *testing.T, p *pod) string {
			if err := os.Chown(filepath.Join(p.stateDir, state.FileName), 1234, 1234); err != nil {
				t.Fatal(err)
			}
			return ""
		}, renew: "owned by uid 1234", revoke: "owned by uid 1234"},
		{name: "state dir of another user", do: func(t *testing.T, p *pod) string {
			if err := os.Chown(p.stateDir, 1234, 1234); err != nil {
				t.Fatal(err)
			}
			return ""
		}, renew: "is owned by uid 1234", revoke: "is owned by uid 1234"},
		{name: "secrets_dir pointed elsewhere", do: func(t *testing.T, p *pod) string {
			elsewhere := t.TempDir()
			victim := filepath.Join(elsewhere, "db")
			if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			st, err := state.Load(p.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			st.SecretsDir = elsewhere
			st.Secrets[0].File = victim
			st.VaultAddr = bed.VaultAddr // the lease can be revoked
			if err := state.Save(p.stateDir, st); err != nil {
				t.Fatal(err)
			}
			return victim
		}, renew: "--secrets-dir", revoke: "secret files not removed", revoked: true},
	}
	var mu sync.Mutex
	clean := 0
	concurrently(t, cases, func(c tamper) string { return c.name }, func(t *testing.T, c tamper) {
		role := "hr-tamper-" + strings.ReplaceAll(c.name, " ", "-")
		if err := bed.CreateDBRole(role, time.Hour, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		rec := newRecorder(t)
		p := newPod(t)
		p.mustInit("--secret", "db=database/creds/"+role)
		token := p.token()
		st, err := state.Load(p.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		st.VaultAddr = rec.addr
		if err := state.Save(p.stateDir, st); err != nil {
			t.Fatal(err)
		}
		keep := c.do(t, p)
		renew := runWith(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", ""}, runOpts{env: p.env, timeout: 20 * time.Second})
		if renew.code != 1 || !strings.Contains(renew.stderr, c.renew) {
			t.Errorf("vault-renew: exit %d, want 1 saying %q:\n%s", renew.code, c.renew, renew.stderr)
		}
		rv := p.revoke()
		if rv.code != 1 || !strings.Contains(rv.stderr, c.revoke) {
			t.Errorf("vault-revoke: exit %d, want 1 saying %q:\n%s", rv.code, c.revoke, rv.stderr)
		}
		if rec.holds(rootSecret) || rec.holds(token) {
			t.Error("a token or the root-only file's content reached the server named in state.json")
		}
		if keep != "" {
			if _, err := os.Stat(keep); err != nil {
				t.Errorf("%s, outside --secrets-dir, is gone: %v", keep, err)
			}
		}
		if c.revoked {
			if left := leasesLeft(t, "database/creds/"+role, 3*time.Second); len(left) > 0 {
				t.Errorf("vault-revoke left the lease in Vault: %v", left)
			}
		}
		os.Chown(p.stateDir, 0, 0)
		os.Chown(filepath.Join(p.stateDir, state.FileName), 0, 0)
		if !t.Failed() {
			mu.Lock()
			clean++
			mu.Unlock()
		}
	})

	// vault-init with a planted token.pending symlink: the root-only
	// content is never sent to Vault as a token.
	t.Run("token.pending is a symlink", func(t *testing.T) {
		rec := newRecorder(t)
		p := newPod(t)
		if err := os.Symlink(rootOnly, filepath.Join(p.stateDir, "token.pending")); err != nil {
			t.Fatal(err)
		}
		r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+testbed.Role, "--vault-addr", rec.addr, "--timeout", "3s"), p.env...)
		if rec.holds(rootSecret) {
			t.Error("vault-init sent the content of a symlinked token.pending to Vault")
		}
		if !strings.Contains(r.stderr, "is a symlink") {
			t.Errorf("vault-init does not say the journal is a symlink:\n%s", r.stderr)
		}
		if fi, err := os.Lstat(filepath.Join(p.stateDir, "token.pending")); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			t.Error("the planted symlink is still there")
		}
		if !t.Failed() {
			mu.Lock()
			clean++
			mu.Unlock()
		}
	})
	figure(t, "hostile-review", "tampered state dir (symlinked token and token.pending, state.json or state dir of another uid, secrets_dir elsewhere): %d/%d refused, 0 bytes of a root-only file or token sent to the server named in state.json, 0 files removed outside --secrets-dir", clean, len(cases)+1)
}

// TestSecondSidecar: a second vault-renew on a state dir exits 1 at once,
// naming the first one's pid; the first keeps the pod's credential.
func TestSecondSidecar(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.mustInit("--secret", "db=database/creds/"+testbed.Role)
	sc := startRenewSidecar(t, p)
	r := runWith(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", ""}, runOpts{env: p.env, timeout: 10 * time.Second})
	if r.code != 1 || !strings.Contains(r.stderr, "another vault-renew is running on this state dir") || !strings.Contains(r.stderr, "pid ") {
		t.Errorf("second vault-renew: exit %d in %s:\n%s", r.code, r.elapsed, r.stderr)
	}
	if code, _ := httpGet(t, sc.url+"/readyz"); code != 200 {
		t.Errorf("the first sidecar's /readyz = %d; want 200", code)
	}
	sc.mustExitPromptly(t)
	figure(t, "hostile-review", "second vault-renew on one state dir: exit %d after %s, naming the first one's pid", r.code, r.elapsed.Round(time.Millisecond))
}
