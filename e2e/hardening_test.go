package e2e

// The hostile review's findings, each reproduced against the real Vault
// and PostgreSQL: batch tokens, a state dir that is damaged or tampered
// with, an operator who revokes a lease or the token by hand, a second
// sidecar, a wall clock that jumps.

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// createBatchRole creates kubernetes auth role name issuing batch tokens
// with the given TTL, and a database role of the same name whose leases
// (1 h) would outlive the token.
func createBatchRole(t *testing.T, name string, ttl time.Duration) {
	t.Helper()
	_, err := bed.Root().Logical().WriteWithContext(context.Background(), "auth/kubernetes/role/"+name, map[string]any{
		"bound_service_account_names":      []string{testbed.ServiceAccount},
		"bound_service_account_namespaces": []string{testbed.Namespace},
		"audience":                         testbed.Audience,
		"token_policies":                   []string{testbed.Policy},
		"token_ttl":                        int(ttl.Seconds()),
		"token_type":                       "batch",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bed.CreateDBRole(name, time.Hour, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
}

// TestBatchTokens: a kubernetes role with token_type=batch. The app
// queries for 60 s across three batch-token lifetimes (20 s) without one
// failed query; vault-revoke then leaves no lease and no database user,
// exits 0, and exits 0 again on a second run.
func TestBatchTokens(t *testing.T) {
	t.Parallel()
	const role = "hr-batch"
	createBatchRole(t, role, 20*time.Second)
	p := newPod(t)
	r := p.mustInit("--role", role, "--secret", "db=database/creds/"+role)
	if !strings.HasPrefix(p.token(), "hvb.") {
		t.Fatalf("the role did not give a batch token")
	}
	if strings.Count(r.stderr, "the token is a batch token") != 1 {
		t.Errorf("vault-init does not say once that the token is a batch token:\n%s", r.stderr)
	}
	sc := startRenewSidecar(t, p, "--grace", "5s")
	app := runApp(t, p, filepath.Join(p.secretsDir, "db"), 60*time.Second)
	app.mustNotFail(t)
	m := sc.metrics(t)
	if v := m["podlease_logins_total"]; v < 2 {
		t.Errorf("logins = %v over 60 s of 20 s batch tokens; want one before each token ends", v)
	}
	if len(app.users) < 3 {
		t.Errorf("usernames over 60 s: %v; want a new credential under each new token", app.users)
	}
	if v := m["podlease_token_failures_total"]; v != 0 {
		t.Errorf("podlease_token_failures_total = %v; want 0", v)
	}
	if leases := leasesUnder(t, "database/creds/"+role); len(leases) > 2 {
		t.Errorf("live leases before revocation: %v; want the current one and at most one in its grace period", leases)
	}

	rv := p.revoke()
	if rv.code != 0 {
		t.Fatalf("vault-revoke with a batch token exited %d:\n%s", rv.code, rv.stderr)
	}
	if strings.Count(rv.stderr, "the token is a batch token") != 1 {
		t.Errorf("vault-revoke does not say once that the batch token is not revoked:\n%s", rv.stderr)
	}
	if left := leasesLeft(t, "database/creds/"+role, 5*time.Second); len(left) > 0 {
		t.Errorf("leases left after vault-revoke: %v", left)
	}
	users := 0
	for _, u := range app.users {
		if dbRoleExists(t, u) {
			users++
			t.Errorf("database user %s still exists after vault-revoke", u)
		}
	}
	if again := p.revoke(); again.code != 0 {
		t.Errorf("second vault-revoke exited %d:\n%s", again.code, again.stderr)
	}
	sc.mustExitPromptly(t)
	figure(t, "hostile-review", "batch tokens (20 s TTL): %d app queries over 60 s, %d failed, %d logins, %d database users; after vault-revoke: %d leases, %d database users; second vault-revoke exit 0",
		app.queries, len(app.failures), int(m["podlease_logins_total"]), len(app.users), len(leasesUnder(t, "database/creds/"+role)), users)
}

// revoke runs vault-revoke for p.
func (p *pod) revoke(args ...string) result {
	p.t.Helper()
	return run(p.t, "vault-revoke", append([]string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, args...), p.env...)
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
		if left := leasesLeft(t, "database/creds/"+role, 3*time.Second); c.revoked && len(left) > 0 {
			t.Errorf("vault-revoke left the lease in Vault: %v", left)
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

// TestClockJumpLeavesNoUnlistedLease: the wall clock jumped past the
// lease's and the token's expires_at while vault-renew was down (state.json
// says both expired; Vault says both live). vault-renew replaces the
// credential, keeps the old lease listed, and revokes it after --grace:
// every live lease under the role is named in state.json throughout.
func TestClockJumpLeavesNoUnlistedLease(t *testing.T) {
	t.Parallel()
	const role = "hr-clock"
	if err := bed.CreateDBRole(role, time.Hour, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	// Leases of earlier runs (go test -count=N) are not this pod's.
	earlier := map[string]bool{}
	for _, l := range leasesUnder(t, "database/creds/"+role) {
		earlier[l] = true
	}
	p := newPod(t)
	p.mustInit("--secret", "db=database/creds/"+role)
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	old, acc := st.Secrets[0].LeaseID, st.Token.Accessor
	past := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	st.Secrets[0].ExpiresAt, st.Token.ExpiresAt = past, past
	if err := state.Save(p.stateDir, st); err != nil {
		t.Fatal(err)
	}
	sc := startRenewSidecar(t, p, "--grace", "3s")
	// A lease Vault just issued is journaled in state.json a moment
	// later: unlisted means unlisted in two samples in a row.
	unlisted, seen := 0, map[string]int{}
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		st, err := state.Load(p.stateDir)
		if err != nil {
			continue
		}
		for _, l := range leasesUnder(t, "database/creds/"+role) {
			if earlier[l] || listedIn(st, l) {
				seen[l] = 0
				continue
			}
			if seen[l]++; seen[l] == 2 {
				unlisted++
				t.Errorf("lease %s is live in Vault and named nowhere in state.json", l)
			}
		}
	}
	st, err = state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	tokenKept := st.Token.Accessor == acc
	if !tokenKept {
		t.Errorf("vault-renew logged in again because the token looked expired by the clock; Vault said it lives")
	}
	ttl, _ := leaseTTL(old)
	if ttl > 0 {
		t.Errorf("the old lease is still alive after the grace period")
	}
	sc.mustExitPromptly(t)
	if r := p.revoke(); r.code != 0 {
		t.Errorf("vault-revoke exited %d:\n%s", r.code, r.stderr)
	}
	figure(t, "hostile-review", "wall clock jumped past expires_at: %d leases live in Vault and unnamed in state.json over 6 s; old lease revoked within 3 s after --grace 3s: %v; token kept (lookup-self, not the clock): %v", unlisted, ttl == 0, tokenKept)
}

func listedIn(st *state.State, lease string) bool {
	for _, s := range append(append([]state.Secret{}, st.Secrets...), st.Pending...) {
		if s.LeaseID == lease {
			return true
		}
	}
	for _, r := range st.Retiring {
		if r.LeaseID == lease {
			return true
		}
	}
	return false
}

// TestOperatorRevokes: an operator revokes the pod's lease (`vault lease
// revoke`) or its token (`vault token revoke -accessor`) an hour before
// the next renewal. With --verify-interval 2s the sidecar notices within
// the interval and the app's file holds a working credential again; the
// revoked user is gone.
func TestOperatorRevokes(t *testing.T) {
	t.Parallel()
	type revocation struct {
		name string
		do   func(st *state.State) error
		log  string
	}
	cases := []revocation{
		{"lease", func(st *state.State) error {
			_, err := bed.Root().Logical().WriteWithContext(context.Background(), "sys/leases/revoke", map[string]any{"lease_id": st.Secrets[0].LeaseID})
			return err
		}, "--verify-interval: Vault no longer knows the lease"},
		{"token", func(st *state.State) error {
			_, err := bed.Root().Logical().WriteWithContext(context.Background(), "auth/token/revoke-accessor", map[string]any{"accessor": st.Token.Accessor})
			return err
		}, "Vault refused it when --verify-interval checked it"},
	}
	var mu sync.Mutex
	var took []string
	concurrently(t, cases, func(c revocation) string { return c.name }, func(t *testing.T, c revocation) {
		role := "hr-operator-" + c.name
		if err := bed.CreateDBRole(role, time.Hour, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		p := newPod(t)
		p.mustInit("--secret", "db=database/creds/"+role)
		file := filepath.Join(p.secretsDir, "db")
		oldUser, _ := dbCreds(t, file)
		st, err := state.Load(p.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		sc := startRenewSidecar(t, p, "--verify-interval", "2s")
		time.Sleep(time.Second)
		if err := c.do(st); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		waitUntil(t, 5*time.Second, "a new working credential in the file", func() bool {
			user, password := dbCreds(t, file)
			return user != oldUser && appQuery(user, password) == nil
		})
		elapsed := time.Since(began).Round(100 * time.Millisecond)
		if !strings.Contains(sc.stderr.String(), c.log) {
			t.Errorf("the sidecar's log lacks %q", c.log)
		}
		waitUntil(t, 5*time.Second, "the revoked user to be dropped", func() bool { return !dbRoleExists(t, oldUser) })
		if code, _ := httpGet(t, sc.url+"/readyz"); code != 200 {
			t.Errorf("/readyz = %d with a new credential; want 200", code)
		}
		sc.mustExitPromptly(t)
		mu.Lock()
		took = append(took, c.name+" "+elapsed.String())
		mu.Unlock()
	})
	figure(t, "hostile-review", "operator revoked the lease or the token, --verify-interval 2s: working credential in the file again after %s", strings.Join(took, ", "))
}
