package revokecmd

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/revocation"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

const (
	leaseDB    = "database/creds/app/AAAA"
	leaseOld   = "database/creds/app/OLD1"
	accessor   = "acc-0123"
	fallbackLn = "sys/leases/revoke refused (permission denied): revoking the token instead"
)

// answers are the statuses a fakeVault gives; zero means success.
type answers struct {
	leaseStatus  int
	leaseError   string
	leaseTimes   int           // how many lease revocations get leaseStatus; 0: all
	failLease    string        // a lease whose revocation the secrets engine always fails
	downFor      time.Duration // every request answers 503 until this long after the first
	selfStatus   int
	selfError    string // default: Vault's answer to a dead token
	lookupStatus int
}

// deadToken is what Vault answers a revoked or expired token; a live
// token whose policy does not allow the request gets "permission denied"
// alone.
const deadToken = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"

// fakeVault answers the three endpoints vault-revoke uses.
type fakeVault struct {
	answers
	token string

	mu          sync.Mutex
	leases      []string // lease ids asked to be revoked
	selfRevokes int
	lookups     int
	badTokens   int
	first       time.Time
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.first.IsZero() {
		f.first = time.Now()
	}
	if time.Since(f.first) < f.downFor {
		vaultError(w, 503, "Vault is sealed")
		return
	}
	if r.Header.Get("X-Vault-Token") != f.token {
		f.badTokens++
		vaultError(w, 403, deadToken)
		return
	}
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/v1/sys/leases/revoke":
		var body struct {
			LeaseID string `json:"lease_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.LeaseID == "" {
			vaultError(w, 400, "lease_id must be specified")
			return
		}
		f.leases = append(f.leases, body.LeaseID)
		if body.LeaseID == f.failLease {
			vaultError(w, 400, "failed to revoke entry: resp: (*logical.Response)(nil) err: ERROR: role \"v-app-x\" cannot be dropped because some objects depend on it (SQLSTATE 2BP01)")
			return
		}
		if f.leaseStatus != 0 && (f.leaseTimes == 0 || len(f.leases) <= f.leaseTimes) {
			vaultError(w, f.leaseStatus, f.leaseError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut && r.URL.Path == "/v1/auth/token/revoke-self":
		f.selfRevokes++
		if f.selfStatus != 0 {
			vaultError(w, f.selfStatus, cmp.Or(f.selfError, deadToken))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/auth/token/lookup-self":
		f.lookups++
		if f.lookupStatus != 0 {
			vaultError(w, f.lookupStatus, deadToken)
			return
		}
		fmt.Fprintf(w, `{"data":{"accessor":%q,"ttl":3600}}`, accessor)
	default:
		vaultError(w, 404, "unexpected request "+r.Method+" "+r.URL.Path)
	}
}

func vaultError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string][]string{"errors": {msg}})
}

func (f *fakeVault) calls() (leases []string, selfRevokes, lookups, badTokens int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.leases...), f.selfRevokes, f.lookups, f.badTokens
}

// pod is what vault-init leaves behind: secret files, a token file and
// state.json.
type pod struct {
	stateDir, tokenFile string
	secretsDir          string
	token               string
	files               []string
}

func newPod(t *testing.T, vaultAddr string, owned bool) *pod {
	t.Helper()
	dir := t.TempDir()
	p := &pod{
		stateDir: filepath.Join(dir, "state"),
		token:    "hvs.SECRET-TOKEN-" + strings.ReplaceAll(t.Name(), "/", "-"),
	}
	p.tokenFile = filepath.Join(p.stateDir, state.TokenName)
	secretsDir := filepath.Join(dir, "secrets")
	p.secretsDir = secretsDir
	for _, d := range []string{p.stateDir, secretsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	st := &state.State{
		VaultAddr:  vaultAddr,
		Auth:       state.Auth{Method: "kubernetes", Mount: "kubernetes", Role: "web"},
		Token:      state.Token{Accessor: accessor, TTL: 3600, Renewable: true, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Owned: owned},
		SecretsDir: secretsDir,
		Secrets: []state.Secret{
			{Name: "db", Path: "database/creds/app", Kind: state.KindLeased, LeaseID: leaseDB, LeaseDuration: 3600, File: filepath.Join(secretsDir, "db"), FileMode: "0440", Format: "json"},
			{Name: "api", Path: "secret/data/app", Kind: state.KindKV, File: filepath.Join(secretsDir, "api"), FileMode: "0440", Format: "json"},
		},
		Retiring: []state.Retiring{{Secret: "db", LeaseID: leaseOld, RevokeAt: now.Add(time.Minute)}},
	}
	for _, s := range st.Secrets {
		if err := os.WriteFile(s.File, []byte(`{"password":"hunter2"}`), 0o440); err != nil {
			t.Fatal(err)
		}
		p.files = append(p.files, s.File)
	}
	if err := state.Save(p.stateDir, st); err != nil {
		t.Fatal(err)
	}
	if err := state.WriteToken(p.stateDir, p.token); err != nil {
		t.Fatal(err)
	}
	return p
}

func startVault(t *testing.T, f *fakeVault) string {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

func run(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return code, stderr.String()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

func assertRevokedAndClean(t *testing.T, p *pod) {
	t.Helper()
	for _, f := range append(p.files, p.tokenFile) {
		if exists(f) {
			t.Errorf("%s still exists", f)
		}
	}
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatalf("state.json after revoke: %v", err)
	}
	if st.RevokedAt == nil {
		t.Error("state.json has no revoked_at: a running vault-renew would keep renewing")
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		vault answers
		owned bool

		wantLeases []string
		wantSelf   int
		wantLog    []string
	}{
		{
			name:       "leases then token",
			owned:      true,
			wantLeases: []string{leaseDB, leaseOld},
			wantSelf:   1,
			wantLog:    []string{"revoked lease", leaseDB, leaseOld, "revoked the token", accessor},
		},
		{
			name:       "403 on sys/leases/revoke falls back to revoke-self",
			vault:      answers{leaseStatus: 403, leaseError: "permission denied"},
			owned:      true,
			wantLeases: []string{leaseDB},
			wantSelf:   1,
			wantLog:    []string{fallbackLn, "revoked the token"},
		},
		{
			name:       "leases already expired",
			vault:      answers{leaseStatus: 400, leaseError: "invalid lease"},
			owned:      true,
			wantLeases: []string{leaseDB, leaseOld},
			wantSelf:   1,
			wantLog:    []string{"lease already gone", leaseDB},
		},
		{
			name:       "token already dead",
			vault:      answers{leaseStatus: 403, leaseError: deadToken, selfStatus: 403},
			owned:      true,
			wantLeases: []string{leaseDB},
			wantSelf:   1,
			wantLog:    []string{"the token was already invalid"},
		},
		{
			name:       "user-supplied token is kept",
			owned:      false,
			wantLeases: []string{leaseDB, leaseOld},
			wantSelf:   0,
			wantLog:    []string{"not revoking it", accessor},
		},
		{
			name:       "user-supplied token already dead",
			vault:      answers{leaseStatus: 403, leaseError: deadToken, lookupStatus: 403},
			owned:      false,
			wantLeases: []string{leaseDB},
			wantSelf:   0,
			wantLog:    []string{"the token is no longer valid"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeVault{answers: tt.vault}
			addr := startVault(t, f)
			p := newPod(t, addr, tt.owned)
			f.token = p.token

			code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			leases, self, _, bad := f.calls()
			if strings.Join(leases, ",") != strings.Join(tt.wantLeases, ",") {
				t.Errorf("revoked leases %v, want %v", leases, tt.wantLeases)
			}
			if self != tt.wantSelf {
				t.Errorf("revoke-self called %d times, want %d", self, tt.wantSelf)
			}
			if bad != 0 {
				t.Errorf("%d requests without the pod's token", bad)
			}
			for _, s := range tt.wantLog {
				if !strings.Contains(stderr, s) {
					t.Errorf("log lacks %q:\n%s", s, stderr)
				}
			}
			if n := strings.Count(stderr, fallbackLn); n > 1 {
				t.Errorf("fallback logged %d times, want at most once", n)
			}
			if strings.Contains(stderr, "level=ERROR") || strings.Contains(stderr, "level=WARN") {
				t.Errorf("a successful revoke logged a warning or an error:\n%s", stderr)
			}
			if strings.Contains(stderr, p.token) {
				t.Errorf("the token appears in the log:\n%s", stderr)
			}
			assertRevokedAndClean(t, p)
		})
	}
}

// A node that stops being the active one answers a lease revocation with
// 400 "node is not the leader": vault-revoke tries again, as it does for
// a 5xx, and the new active node revokes the lease.
func TestRetriesThroughALeadershipChange(t *testing.T) {
	t.Parallel()
	f := &fakeVault{answers: answers{leaseStatus: 400, leaseError: "failed to delete lease entry: node is not the leader", leaseTimes: 2}}
	addr := startVault(t, f)
	p := newPod(t, addr, true)
	f.token = p.token
	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	leases, self, _, _ := f.calls()
	if want := []string{leaseDB, leaseDB, leaseDB, leaseOld}; strings.Join(leases, ",") != strings.Join(want, ",") {
		t.Errorf("revocations asked %v, want %v", leases, want)
	}
	if self != 1 {
		t.Errorf("revoke-self called %d times, want 1", self)
	}
	for _, s := range []string{"transient failure, retrying", "node is not the leader", "revoked lease", leaseOld} {
		if !strings.Contains(stderr, s) {
			t.Errorf("log lacks %q:\n%s", s, stderr)
		}
	}
	assertRevokedAndClean(t, p)
}

func TestSecondRunIsNoOp(t *testing.T) {
	t.Parallel()
	f := &fakeVault{}
	p := newPod(t, startVault(t, f), true)
	f.token = p.token
	if code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir); code != 0 {
		t.Fatalf("first run: exit %d; stderr:\n%s", code, stderr)
	}
	leases, self, _, _ := f.calls()

	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
	if code != 0 {
		t.Fatalf("second run: exit %d, want 0; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "nothing to revoke") {
		t.Errorf("second run does not say there is nothing to revoke:\n%s", stderr)
	}
	leases2, self2, _, _ := f.calls()
	if len(leases2) != len(leases) || self2 != self {
		t.Errorf("second run called Vault again: leases %v -> %v, revoke-self %d -> %d", leases, leases2, self, self2)
	}
}

func TestRetryAfterEarlierFailure(t *testing.T) {
	t.Parallel()
	f := &fakeVault{}
	p := newPod(t, startVault(t, f), true)
	f.token = p.token
	// An earlier run marked the state but could not reach Vault, so the
	// token file is still there.
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	earlier := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	st.RevokedAt = &earlier
	if err := state.Save(p.stateDir, st); err != nil {
		t.Fatal(err)
	}

	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	if leases, self, _, _ := f.calls(); len(leases) != 2 || self != 1 {
		t.Errorf("revoked leases %v and the token %d times, want 2 leases and the token once", leases, self)
	}
	assertRevokedAndClean(t, p)
}

func TestNothingToRevoke(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"missing state dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "absent") }},
		{"empty state dir", func(t *testing.T) string { return t.TempDir() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// From the environment, as a pod spec would set it.
			code, stderr := run(t, map[string]string{"PODLEASE_STATE_DIR": tt.dir(t)})
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "nothing to revoke") {
				t.Errorf("want one line saying there is nothing to revoke, got:\n%s", stderr)
			}
		})
	}
}

func TestCorruptState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, state.FileName)
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr := run(t, nil, "--state-dir", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, path) {
		t.Errorf("error does not name %s:\n%s", path, stderr)
	}
}

func TestVaultUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close() // nothing listens there now: connection refused

	p := newPod(t, addr, true)
	start := time.Now()
	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--timeout", "1s")
	elapsed := time.Since(start)

	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if elapsed > 2*time.Second {
		t.Errorf("took %s with --timeout 1s", elapsed.Round(time.Millisecond))
	}
	for _, s := range []string{addr, leaseDB, leaseOld, accessor, "TTL"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("error does not mention %q:\n%s", s, stderr)
		}
	}
	if strings.Contains(stderr, p.token) {
		t.Errorf("the token appears in the log:\n%s", stderr)
	}
	if !exists(p.tokenFile) {
		t.Error("token file removed although nothing was revoked: a retry could not finish")
	}
	for _, f := range p.files {
		if exists(f) {
			t.Errorf("secret file %s left behind", f)
		}
	}
}

func TestUserTokenWithoutPermission(t *testing.T) {
	t.Parallel()
	f := &fakeVault{answers: answers{leaseStatus: 403, leaseError: "permission denied"}}
	p := newPod(t, startVault(t, f), false)
	f.token = p.token

	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	for _, s := range []string{"sys/leases/revoke", leaseDB, "--auth-method token"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("error does not mention %q:\n%s", s, stderr)
		}
	}
	if _, self, _, _ := f.calls(); self != 0 {
		t.Error("revoked a token the user supplied")
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"zero timeout", []string{"--timeout", "0s"}, nil, 2},
		{"bad timeout from env", nil, map[string]string{"PODLEASE_TIMEOUT": "soon"}, 2},
		{"argument", []string{"now"}, nil, 2},
		{"bad log format", []string{"--log-format", "xml"}, nil, 2},
		{"help", []string{"--help"}, nil, 0},
		{"version", []string{"--version"}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if code, stderr := run(t, tt.env, tt.args...); code != tt.want {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.want, stderr)
			}
		})
	}
}

// TestAfterARunWithoutAClient: a run whose own environment keeps it from
// building a Vault client (a VAULT_CACERT naming a file not mounted where
// it runs) revokes nothing, so it keeps the token file: the next run, or
// the sidecar's --revoke-on-exit, finishes the work. It uses t.Setenv, so
// it does not run in parallel.
func TestAfterARunWithoutAClient(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "not-mounted")
	for _, tc := range []struct {
		next string
		env  []string // variable, value
	}{
		{"vault-revoke", []string{"VAULT_CACERT", missing + ".pem"}},
		{"vault-renew --revoke-on-exit", []string{"VAULT_CACERT", missing + ".pem"}},
		{"vault-revoke", []string{"VAULT_CAPATH", missing + ".d"}},
		{"vault-revoke", []string{"VAULT_CLIENT_CERT", missing + ".crt", "VAULT_CLIENT_KEY", missing + ".key"}},
	} {
		next := tc.next
		t.Run(tc.env[0]+" then "+next, func(t *testing.T) {
			f := &fakeVault{}
			p := newPod(t, startVault(t, f), true)
			f.token = p.token
			known, err := state.Load(p.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], tc.env[i+1])
			}
			code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
			if code != 1 || !strings.Contains(stderr, "VAULT_") || !strings.Contains(stderr, "running vault-revoke again can finish") {
				t.Errorf("exit %d, want 1 with an error naming the VAULT_* settings and saying a second run can finish; stderr:\n%s", code, stderr)
			}
			if !exists(p.tokenFile) {
				t.Fatal("the token file was removed by a run that revoked nothing")
			}
			for i := 0; i < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], "")
			}

			if next == "vault-revoke" {
				if code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir); code != 0 {
					t.Fatalf("second run: exit %d; stderr:\n%s", code, stderr)
				}
			} else {
				client, err := vaultclient.New(known.VaultAddr, "", 5*time.Second, nil)
				if err != nil {
					t.Fatal(err)
				}
				client.SetToken(p.token)
				if err := revocation.RevokeKnown(context.Background(), p.stateDir, p.secretsDir, known, client, slog.New(slog.DiscardHandler)); err != nil {
					t.Fatal(err)
				}
			}
			if leases, self, _, _ := f.calls(); len(leases) != 2 || self != 1 {
				t.Errorf("after the failed run, %s revoked leases %v and the token %d times, want 2 leases and the token once", next, leases, self)
			}
			assertRevokedAndClean(t, p)
		})
	}
}

// TestSecondRunRemovesWhatTheFirstCouldNot: a secret file the first run
// could not remove (here a directory in its place) is removed by the
// next run, though Vault has nothing left to revoke.
func TestSecondRunRemovesWhatTheFirstCouldNot(t *testing.T) {
	t.Parallel()
	f := &fakeVault{}
	p := newPod(t, startVault(t, f), true)
	f.token = p.token
	api := p.files[1]
	if err := os.Remove(api); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(api, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
	if code != 1 || !strings.Contains(stderr, "remove secret file") {
		t.Fatalf("first run: exit %d, want 1 naming the file it could not remove; stderr:\n%s", code, stderr)
	}
	if err := os.RemoveAll(api); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(api, []byte(`{"api_key":"k"}`), 0o440); err != nil {
		t.Fatal(err)
	}
	code, stderr = run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
	if code != 0 {
		t.Fatalf("second run: exit %d; stderr:\n%s", code, stderr)
	}
	assertRevokedAndClean(t, p)
	if leases, self, _, _ := f.calls(); len(leases) != 2 || self != 1 {
		t.Errorf("Vault was asked again: leases %v, revoke-self %d", leases, self)
	}
}

// TestTokenWithoutRevokeSelf: a live token whose policy allows neither
// sys/leases/revoke nor auth/token/revoke-self (an auth role with
// token_no_default_policy) gets "permission denied" alone. That is no
// revocation: the run exits 1 naming the policy, and the token file
// stays for a run once the policy is fixed.
func TestTokenWithoutRevokeSelf(t *testing.T) {
	t.Parallel()
	f := &fakeVault{answers: answers{leaseStatus: 403, leaseError: "1 error occurred:\n\t* permission denied\n\n", selfStatus: 403, selfError: "1 error occurred:\n\t* permission denied\n\n"}}
	p := newPod(t, startVault(t, f), true)
	f.token = p.token
	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir)
	if code != 1 || !strings.Contains(stderr, "auth/token/revoke-self") || strings.Contains(stderr, "already invalid") {
		t.Errorf("exit %d, want 1 with an error naming auth/token/revoke-self and no claim that the token is dead; stderr:\n%s", code, stderr)
	}
	if !exists(p.tokenFile) {
		t.Error("the token file was removed though the token lives")
	}
}

// TestInterruptedInit: a vault-init killed after it logged in leaves its
// journal and no state.json. vault-revoke cannot revoke that token (the
// journal does not name Vault), so it says so and exits 1 rather than
// "nothing to revoke".
func TestInterruptedInit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stateDir, secretsDir := filepath.Join(dir, "state"), filepath.Join(dir, "secrets")
	for _, d := range []string{stateDir, secretsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	const token = "hvs.SECRET-TOKEN-interrupted"
	if err := os.WriteFile(filepath.Join(stateDir, state.PendingName), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr := run(t, nil, "--state-dir", stateDir, "--secrets-dir", secretsDir)
	if code != 1 || !strings.Contains(stderr, state.PendingName) || !strings.Contains(stderr, "run vault-init again") || strings.Contains(stderr, "nothing to revoke") {
		t.Errorf("exit %d, want 1 naming %s and what to do; stderr:\n%s", code, state.PendingName, stderr)
	}
	if strings.Contains(stderr, token) {
		t.Error("the token appears in the output")
	}
}

// TestLeaseTheEngineCannotRevoke: Vault's database engine keeps failing
// to revoke one lease (its user owns objects). The other lease and the
// token are still revoked within --timeout, and the run exits 1 naming
// the lease and the engine's error.
func TestLeaseTheEngineCannotRevoke(t *testing.T) {
	t.Parallel()
	f := &fakeVault{answers: answers{failLease: leaseDB}}
	p := newPod(t, startVault(t, f), true)
	f.token = p.token
	start := time.Now()
	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--timeout", "4s")
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("took %s with --timeout 4s", took)
	}
	if code != 1 {
		t.Errorf("exit %d, want 1:\n%s", code, stderr)
	}
	leases, self, _, _ := f.calls()
	if !slices.Contains(leases, leaseOld) || self != 1 {
		t.Errorf("revoked leases %v and the token %d times; want %s revoked after %s failed, and the token", leases, self, leaseOld, leaseDB)
	}
	for _, want := range []string{leaseDB, "secrets engine kept failing", "cannot be dropped because some objects depend on it", "the token is revoked"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestOutageLongerThanHalfTheTimeout: Vault is away for 3.5 s of a 7 s
// --timeout. A lease is cut at half the time left only when Vault's
// engine keeps failing it; through an outage the revocations go on until
// the deadline, and everything is revoked once Vault is back.
func TestOutageLongerThanHalfTheTimeout(t *testing.T) {
	t.Parallel()
	f := &fakeVault{answers: answers{downFor: 3500 * time.Millisecond}}
	p := newPod(t, startVault(t, f), true)
	f.token = p.token
	code, stderr := run(t, nil, "--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--timeout", "7s")
	if code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, stderr)
	}
	if leases, self, _, _ := f.calls(); !slices.Contains(leases, leaseDB) || !slices.Contains(leases, leaseOld) || self == 0 {
		t.Errorf("revoked leases %v and the token %d times; want both leases and the token", leases, self)
	}
}
