package renew

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/login"
	"github.com/podlease/podlease/internal/revocation"
	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// Most tests run in a synctest bubble: the fake Vault and vault-renew
// share a fake clock, so a minute of leases takes milliseconds.

// fixture is a pod's state dir as vault-init leaves it, and a running
// vault-renew on it.
type fixture struct {
	t          *testing.T
	v          *fakeVault
	dir        string
	stateDir   string
	secretsDir string
	logs       *syncBuffer
	procRoot   string
	notify     *http.Client

	mu      sync.Mutex
	handler http.Handler
	cancel  context.CancelFunc
	done    chan int
	exited  bool
	code    int
}

type spec struct{ name, path, format, template string }

var dbSpec = spec{name: "db", path: "database/creds/app", format: "json"}

// newFixture logs in to v and issues every secret as vault-init does,
// with the same shared code.
func newFixture(t *testing.T, v *fakeVault, specs ...spec) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{
		t: t, v: v, dir: dir,
		stateDir:   filepath.Join(dir, "state"),
		secretsDir: filepath.Join(dir, "secrets"),
		logs:       &syncBuffer{},
		procRoot:   filepath.Join(dir, "proc"),
	}
	for _, d := range []string{f.stateDir, f.secretsDir, f.procRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	jwt := filepath.Join(dir, "jwt")
	if err := os.WriteFile(jwt, []byte("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcHAifQ.c2ln"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, _ := v.newClient("", "", 10*time.Second, nil)
	auth := state.Auth{Method: login.Kubernetes, Mount: "kubernetes", Role: "app", JWTFile: jwt}
	res, err := login.Login(ctx, c, auth, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	res.Info.IssuedAt = now.UTC().Truncate(time.Second)
	res.Info.ExpiresAt = now.Add(time.Duration(res.Info.TTL) * time.Second).UTC().Truncate(time.Second)
	c.SetToken(res.Token)
	st := &state.State{VaultAddr: "http://vault.test", Auth: auth, Token: res.Info, SecretsDir: f.secretsDir}
	discard := slog.New(slog.DiscardHandler)
	fetched := map[string]*secrets.Fetched{}
	for _, sp := range specs {
		fe, err := secrets.Read(ctx, c, discard, sp.path)
		if err != nil {
			t.Fatal(err)
		}
		fetched[sp.path] = fe
	}
	for _, sp := range specs {
		fe := fetched[sp.path]
		s := state.Secret{Name: sp.name, Path: sp.path, File: filepath.Join(f.secretsDir, sp.name), FileMode: "0440", Format: sp.format}
		if sp.template != "" {
			s.Format, s.Template, s.TemplateFile = "", sp.template, sp.name+".tmpl"
		}
		content, err := secrets.Render(&s, fe, secrets.LookupFetched(fetched), nil)
		if err != nil {
			t.Fatal(err)
		}
		secrets.Record(&s, fe)
		if err := secrets.WriteFile(&s, content); err != nil {
			t.Fatal(err)
		}
		st.Secrets = append(st.Secrets, s)
	}
	if err := state.WriteToken(f.stateDir, res.Token); err != nil {
		t.Fatal(err)
	}
	if err := state.Save(f.stateDir, st); err != nil {
		t.Fatal(err)
	}
	return f
}

// start runs vault-renew with args after the defaults every test shares.
func (f *fixture) start(args ...string) {
	f.startWith(deps{newClient: f.v.newClient}, args...)
}

func (f *fixture) startWith(d deps, args ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.done = make(chan int, 1)
	args = append([]string{"--state-dir", f.stateDir, "--secrets-dir", f.secretsDir, "--listen", "", "--jitter", "0", "--log-level", "debug"}, args...)
	if d.procRoot == "" {
		d.procRoot = f.procRoot
	}
	if d.notifyClient == nil {
		d.notifyClient = f.notify
	}
	d.handler = func(h http.Handler) {
		f.mu.Lock()
		f.handler = h
		f.mu.Unlock()
	}
	go func() { f.done <- run(ctx, args, func(string) string { return "" }, io.Discard, f.logs, d) }()
}

// stop sends the equivalent of SIGTERM and returns the exit code. It also
// checks that no token or password the fake handed out reached the logs.
func (f *fixture) stop() int {
	f.t.Helper()
	f.cancel()
	code := f.wait()
	f.checkNoSecretsLogged()
	return code
}

// wait returns the exit code once the run ended.
func (f *fixture) wait() int {
	if !f.exited {
		f.code, f.exited = <-f.done, true
	}
	return f.code
}

func (f *fixture) checkNoSecretsLogged() {
	f.t.Helper()
	logs := f.logs.String()
	for _, s := range f.v.secretValues() {
		if strings.Contains(logs, s) {
			f.t.Errorf("a secret value reached the logs: %q", s)
		}
	}
}

func (f *fixture) running() bool {
	if f.exited {
		return false
	}
	select {
	case f.code = <-f.done:
		f.exited = true
		return false
	default:
		return true
	}
}

// get serves an HTTP GET of path with vault-renew's handler.
func (f *fixture) get(path string) (int, string) {
	f.mu.Lock()
	h := f.handler
	f.mu.Unlock()
	if h == nil {
		f.t.Fatal("no HTTP handler yet")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// metric returns the value of one sample of /metrics, e.g.
// `podlease_secret_rotations_total{secret="db"}`.
func (f *fixture) metric(sample string) float64 {
	f.t.Helper()
	_, body := f.get("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				f.t.Fatalf("metric %s: %v", sample, err)
			}
			return v
		}
	}
	f.t.Fatalf("no metric %s in /metrics:\n%s", sample, body)
	return 0
}

func (f *fixture) state() *state.State {
	f.t.Helper()
	st, err := state.Load(f.stateDir)
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// creds is the database credential the app would read from the file.
func (f *fixture) creds(name string) (username, password string) {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.secretsDir, name))
	if err != nil {
		f.t.Fatal(err)
	}
	var c struct{ Username, Password string }
	if err := json.Unmarshal(b, &c); err != nil {
		f.t.Fatalf("secret file %s: %v\n%s", name, err, b)
	}
	return c.Username, c.Password
}

// appLoop plays the app for d: every 0.5 s it reads the file and checks
// that the credential in it still works. It returns the usernames seen.
func (f *fixture) appLoop(d time.Duration) []string {
	f.t.Helper()
	var seen []string
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		user, _ := f.creds("db")
		if !f.v.aliveUser(user) {
			f.t.Fatalf("at %s the app read user %s from the file, and that credential no longer works\nlogs:\n%s", f.elapsed(), user, f.logs)
		}
		if len(seen) == 0 || seen[len(seen)-1] != user {
			seen = append(seen, user)
		}
	}
	return seen
}

var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // synctest's start

func (f *fixture) elapsed() time.Duration { return time.Since(epoch) }

// syncBuffer is a log sink safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestRenewsAtFractionAndKeepsTheSameLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		lease := f.state().Secrets[0].LeaseID
		before, _ := os.ReadFile(filepath.Join(f.secretsDir, "db"))
		f.start()

		time.Sleep(6 * time.Second)
		if _, _, renewals, _ := v.counts(); renewals != 0 {
			t.Fatalf("lease renewed %d times before 66%% of its 10s TTL", renewals)
		}
		time.Sleep(time.Second) // 7s: the renewal at 6.6s is done
		_, issued, renewals, tokenRenewals := v.counts()
		if renewals != 1 || issued != 1 {
			t.Fatalf("after 7s: %d renewals, %d credentials issued; want 1 renewal of the one credential vault-init issued", renewals, issued)
		}
		if tokenRenewals != 1 {
			t.Errorf("token renewed %d times; want once, at start", tokenRenewals)
		}
		st := f.state()
		if got := st.Secrets[0].ExpiresAt; !got.After(epoch.Add(15 * time.Second)) {
			t.Errorf("state.json expires_at = %s after the renewal; want about 16.6s after start", got.Sub(epoch))
		}

		f.appLoop(60 * time.Second)
		_, issued, renewals, _ = v.counts()
		if issued != 1 || renewals < 9 {
			t.Errorf("after 67s: %d renewals, %d credentials; want about 10 renewals of the one credential", renewals, issued)
		}
		if got := f.state().Secrets[0].LeaseID; got != lease {
			t.Errorf("lease changed from %s to %s", lease, got)
		}
		after, _ := os.ReadFile(filepath.Join(f.secretsDir, "db"))
		if !bytes.Equal(before, after) {
			t.Errorf("the secret file changed although the lease was renewed")
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
}

func TestRotatesBeforeMaxTTLAndRevokesAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second
		f := newFixture(t, v, dbSpec)
		oldLease := f.state().Secrets[0].LeaseID
		oldUser, _ := f.creds("db")
		f.start("--grace", "3s")

		// Renewals at 6.6s (to 16.6s) and 13.2s (capped: max TTL at 20s),
		// rotation at expiry minus max(10s/3, 5s).
		seen := f.appLoop(15 * time.Second)
		user, _ := f.creds("db")
		if user == oldUser || len(seen) != 2 {
			t.Fatalf("after 15s the app saw users %v; want a new one before the old lease's max TTL", seen)
		}
		st := f.state()
		if st.Secrets[0].LeaseID == oldLease {
			t.Fatal("state.json still holds the old lease")
		}
		if len(st.Retiring) != 1 || st.Retiring[0].LeaseID != oldLease {
			t.Fatalf("state.json retiring = %+v; want the old lease", st.Retiring)
		}
		if !v.alive(oldLease) {
			t.Fatal("the old lease was revoked before the grace period ended")
		}
		fi, err := os.Stat(filepath.Join(f.secretsDir, "db"))
		if err != nil || fi.Mode().Perm() != 0o440 {
			t.Errorf("rewritten file mode = %v (%v); want 0440 as vault-init wrote it", fi.Mode().Perm(), err)
		}
		if got := f.metric(`podlease_secret_rotations_total{secret="db"}`); got != 1 {
			t.Errorf("rotations metric = %v; want 1", got)
		}

		f.appLoop(3 * time.Second) // 18s: grace (3s) over
		if v.alive(oldLease) {
			t.Error("the old lease is still alive after the grace period")
		}
		if r := f.state().Retiring; len(r) != 0 {
			t.Errorf("state.json retiring = %+v after the revocation; want none", r)
		}

		// The new lease has the same 20s max: the cycle repeats.
		seen = f.appLoop(40 * time.Second)
		if len(seen) < 2 {
			t.Errorf("users over the next 40s: %v; want further rotations", seen)
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
		if !strings.Contains(f.logs.String(), "max TTL is near") {
			t.Error("no log line says why the credential was replaced")
		}
	})
}

func TestTokenMaxTTLLogsInAgainAndReissues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second
		f := newFixture(t, v, dbSpec)
		oldState := f.state()
		oldToken, _ := state.ReadToken(f.stateDir)
		oldUser, _ := f.creds("db")
		f.start()

		// The token renewal at start asks for as long as the lease (1h) and
		// gets 20s: the max TTL is known at once, so the warning comes at
		// start and the login 5s (max(10s/3, 5s)) before the hard expiry.
		time.Sleep(time.Second)
		if !strings.Contains(f.logs.String(), "the token's max TTL is shorter than the leases it holds") {
			t.Errorf("no warning about the token's max TTL at start; logs:\n%s", f.logs)
		}
		f.appLoop(15 * time.Second)
		st := f.state()
		newToken, _ := state.ReadToken(f.stateDir)
		if st.Token.Accessor == oldState.Token.Accessor || newToken == oldToken {
			t.Fatalf("after 16s the token is still the one from vault-init (accessor %s)", st.Token.Accessor)
		}
		if user, _ := f.creds("db"); user == oldUser {
			t.Fatal("the credential was not re-issued under the new token")
		}
		if !v.tokenAlive(oldState.Token.Accessor) {
			t.Fatal("the old token was revoked before its grace period")
		}
		if got := f.metric("podlease_logins_total"); got != 1 {
			t.Errorf("logins metric = %v; want 1", got)
		}

		f.appLoop(4 * time.Second) // 20s: the old token would have died by now anyway
		if v.tokenAlive(oldState.Token.Accessor) || v.alive(oldState.Secrets[0].LeaseID) {
			t.Error("the old token or its lease is still alive")
		}

		seen := f.appLoop(40 * time.Second)
		if len(seen) < 3 {
			t.Errorf("users over 40 more seconds: %v; want a new credential with each new token", seen)
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
}

func TestPeriodicTokenIsRenewedForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.tokenTTL, v.tokenPeriod = 10*time.Second, 10*time.Second
		f := newFixture(t, v, dbSpec)
		acc := f.state().Token.Accessor
		f.start()
		f.appLoop(60 * time.Second)
		if st := f.state(); st.Token.Accessor != acc {
			t.Error("logged in again although a periodic token can be renewed forever")
		}
		if logins, _, _, renewals := v.counts(); logins != 1 || renewals < 8 {
			t.Errorf("%d logins, %d token renewals in 60s; want vault-init's login and a renewal every ~6.6s", logins, renewals)
		}
		if strings.Contains(f.logs.String(), "max TTL") {
			t.Errorf("the logs speak of a max TTL for a periodic token:\n%s", f.logs)
		}
		f.stop()
	})
}

func TestReissueFailingPastTheOldTokenMarksTheCredentialLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second
		f := newFixture(t, v, dbSpec)
		f.start()
		time.Sleep(14 * time.Second)
		v.setFailCreds(true) // the login at 15s works, the re-issue does not
		time.Sleep(7 * time.Second)
		if code, body := f.get("/readyz"); code != 503 || !strings.Contains(body, "db") {
			t.Errorf("/readyz after the old token died with the only credential = %d %q; want 503 naming db", code, body)
		}
		v.setFailCreds(false)
		time.Sleep(15 * time.Second)
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Error("no working credential once Vault issues again")
		}
		if code, _ := f.get("/readyz"); code != 200 {
			t.Errorf("/readyz after recovery = %d; want 200", code)
		}
		if !strings.Contains(f.logs.String(), "the old token ended before this credential could be re-issued") {
			t.Errorf("the logs do not say the credential was lost:\n%s", f.logs)
		}
		f.stop()
	})
}

func TestOutageShorterThanTTLKeepsTheSameLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		lease := f.state().Secrets[0].LeaseID
		f.start()

		time.Sleep(5 * time.Second)
		v.setDown(true)
		time.Sleep(3500 * time.Millisecond) // 8.5s: renewal due at 6.6s keeps failing
		if code, body := f.get("/readyz"); code != 503 || !strings.Contains(body, "db") {
			t.Errorf("/readyz with 1.5s left on a 10s lease = %d %q; want 503 naming db", code, body)
		}
		time.Sleep(500 * time.Millisecond) // 9s: Vault is back, 1s before expiry
		v.setDown(false)
		f.appLoop(20 * time.Second)

		if _, issued, _, _ := v.counts(); issued != 1 {
			t.Errorf("%d credentials issued; want only vault-init's: an outage shorter than the TTL must not cost a new credential", issued)
		}
		if got := f.state().Secrets[0].LeaseID; got != lease || !v.alive(lease) {
			t.Errorf("lease after the outage = %s (alive %v); want %s, alive", got, v.alive(lease), lease)
		}
		if got := f.metric(`podlease_secret_renewal_failures_total{secret="db",operation="renew"}`); got < 2 {
			t.Errorf("renewal failures metric = %v; want the failed attempts counted", got)
		}
		if code, _ := f.get("/readyz"); code != 200 {
			t.Errorf("/readyz after recovery = %d; want 200", code)
		}
		logs := f.logs.String()
		if !strings.Contains(logs, "lease renewal failed; retrying with the same lease") || !strings.Contains(logs, "connection refused") {
			t.Errorf("the logs do not say what failed:\n%s", logs)
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
}

func TestOutageLongerThanTTLWithExitOnFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		f.start("--exit-on-failure")
		time.Sleep(5 * time.Second)
		v.setDown(true)
		time.Sleep(6 * time.Second)
		if f.running() {
			t.Fatal("still running 1s after the lease expired, with --exit-on-failure")
		}
		if code := f.stop(); code != 1 {
			t.Errorf("exit code %d; want 1", code)
		}
		if !strings.Contains(f.logs.String(), "expired while Vault kept failing") {
			t.Errorf("logs do not say why it exited:\n%s", f.logs)
		}
	})
}

func TestLostLeaseIsReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		lease := f.state().Secrets[0].LeaseID
		f.start()
		time.Sleep(2 * time.Second)
		v.mu.Lock()
		v.leases[lease].revoked = true // an operator revoked it
		v.mu.Unlock()
		time.Sleep(5 * time.Second) // renewal at 6.6s: 400, replace at once
		st := f.state()
		if st.Secrets[0].LeaseID == lease || !v.alive(st.Secrets[0].LeaseID) {
			t.Fatalf("lease %s after the old one vanished; want a new live one", st.Secrets[0].LeaseID)
		}
		if len(st.Retiring) != 0 {
			t.Errorf("retiring = %+v; a lease Vault no longer has needs no revocation", st.Retiring)
		}
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Error("the file does not hold the new credential")
		}
		f.stop()
	})
}

func TestRevokedTokenLogsInAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		acc := f.state().Token.Accessor
		f.start()
		time.Sleep(2 * time.Second)
		v.revokeToken(acc) // its lease goes with it
		time.Sleep(5 * time.Second)
		st := f.state()
		if st.Token.Accessor == acc {
			t.Fatal("still on the revoked token")
		}
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Fatal("the file does not hold a working credential")
		}
		if len(st.Retiring) != 0 {
			t.Errorf("retiring = %+v; the revoked token's lease needs no revocation", st.Retiring)
		}
		f.stop()
	})
}

func TestVaultRevokeStopsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		f.start()
		time.Sleep(2 * time.Second)

		// What vault-revoke does to the state.
		unlock, err := state.Lock(context.Background(), f.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		st := f.state()
		now := time.Now().UTC()
		st.RevokedAt = &now
		if err := state.Save(f.stateDir, st); err != nil {
			t.Fatal(err)
		}
		unlock()
		logins0, issued0, renewals0, tokenRenewals0 := v.counts()

		time.Sleep(60 * time.Second)
		if l, i, r, tr := v.counts(); l != logins0 || i != issued0 || r != renewals0 || tr != tokenRenewals0 {
			t.Errorf("Vault calls after revoked_at: logins %d→%d, issued %d→%d, renewals %d→%d, token renewals %d→%d; want none",
				logins0, l, issued0, i, renewals0, r, tokenRenewals0, tr)
		}
		if !f.running() {
			t.Fatal("exited after vault-revoke; want it to wait for SIGTERM")
		}
		if code, body := f.get("/readyz"); code != 503 || !strings.Contains(body, "revoked") {
			t.Errorf("/readyz = %d %q; want 503 saying revoked", code, body)
		}
		if code, _ := f.get("/healthz"); code != 200 {
			t.Errorf("/healthz = %d; want 200", code)
		}
		if got := f.metric("podlease_revoked"); got != 1 {
			t.Errorf("podlease_revoked = %v; want 1", got)
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
}

func TestReadyzAndMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 100 * time.Second
		v.kv["secret/data/app"] = map[string]any{"api_key": "kv-secret-value"}
		f := newFixture(t, v, dbSpec, spec{name: "app", path: "secret/data/app", format: "env"})
		f.start()
		time.Sleep(time.Second)

		if code, body := f.get("/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("/healthz = %d %q", code, body)
		}
		if code, body := f.get("/readyz"); code != 200 || body != "ready\n" {
			t.Errorf("/readyz = %d %q", code, body)
		}
		// Expiries are absolute Unix times, so that an alert can compare
		// them with time().
		now := float64(time.Now().Unix())
		for sample, want := range map[string]float64{
			`podlease_secret_expiry_timestamp_seconds{secret="db"}`:                   now + 99,
			`podlease_secret_renewals_total{secret="db"}`:                             0,
			`podlease_secret_renewal_failures_total{secret="db",operation="renew"}`:   0,
			`podlease_secret_renewal_failures_total{secret="db",operation="rotate"}`:  0,
			`podlease_secret_renewal_failures_total{secret="db",operation="reissue"}`: 0,
			`podlease_secret_renewal_failures_total{secret="db",operation="reread"}`:  0,
			`podlease_secret_rotations_total{secret="db"}`:                            0,
			`podlease_secret_rotations_total{secret="app"}`:                           0,
			`podlease_secret_renewal_failures_total{secret="app",operation="reread"}`: 0,
			`podlease_token_expiry_timestamp_seconds`:                                 now + 3599,
			`podlease_token_renewals_total`:                                           1,
			`podlease_logins_total`:                                                   0,
			`podlease_revoked`:                                                        0,
		} {
			if got := f.metric(sample); got != want {
				t.Errorf("%s = %v; want %v", sample, got, want)
			}
		}
		_, body := f.get("/metrics")
		if !strings.Contains(body, `podlease_build_info{version="dev"} 1`) {
			t.Error("/metrics has no podlease_build_info")
		}
		for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
			if !strings.HasPrefix(line, "podlease_") && !strings.HasPrefix(line, "# HELP podlease_") && !strings.HasPrefix(line, "# TYPE podlease_") {
				t.Errorf("/metrics has a series that is not podlease's: %s", line)
			}
		}
		if strings.Contains(body, `podlease_secret_expiry_timestamp_seconds{secret="app"}`) {
			t.Error("a KV secret has no expiry, but /metrics reports one")
		}

		// The lease's final stretch: min(1m, TTL/4) = 25s before expiry.
		v.setDown(true)
		time.Sleep(75 * time.Second)
		code, body := f.get("/readyz")
		if code != 503 || body != "not ready: expired or about to expire: db\n" {
			t.Errorf("/readyz 24s before the lease expires = %d %q; want 503 naming db", code, body)
		}
		v.setDown(false)
		f.stop()
	})
}

func TestKVRereadRewritesOnlyOnChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.kv["secret/data/app"] = map[string]any{"api_key": "first-key-value"}
		f := newFixture(t, v, spec{name: "app", path: "secret/data/app", format: "env"})
		file := filepath.Join(f.secretsDir, "app")
		ino := func() uint64 {
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			return fi.Sys().(*syscall.Stat_t).Ino
		}
		ino0 := ino()
		f.start("--kv-interval", "10s")
		time.Sleep(11 * time.Second)
		v.mu.Lock()
		reads := v.kvReads
		v.mu.Unlock()
		if reads != 2 {
			t.Errorf("%d KV reads after 11s; want vault-init's and one re-read", reads)
		}
		if ino() != ino0 {
			t.Error("the file was rewritten although the secret did not change")
		}
		v.mu.Lock()
		v.kv["secret/data/app"] = map[string]any{"api_key": "second-key-value"}
		v.mu.Unlock()
		time.Sleep(10 * time.Second)
		b, _ := os.ReadFile(file)
		if string(b) != "API_KEY=\"second-key-value\"\n" {
			t.Errorf("file after the change = %q", b)
		}
		if got := f.metric(`podlease_secret_rotations_total{secret="app"}`); got != 1 {
			t.Errorf("rotations = %v; want 1", got)
		}
		f.stop()
	})
}

func TestRetiringLeasesFromAnEarlierRunAreRevoked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		f := newFixture(t, v, dbSpec)
		// A lease an earlier vault-renew replaced, due for revocation
		// before it crashed, and one still in its grace period.
		st := f.state()
		c, _ := v.newClient("", "", time.Second, nil)
		tok, _ := state.ReadToken(f.stateDir)
		c.SetToken(tok)
		var ids []string
		for range 2 {
			s, err := c.Logical().Read("database/creds/app")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, s.LeaseID)
		}
		st.Retiring = []state.Retiring{
			{Secret: "db", LeaseID: ids[0], RevokeAt: time.Now().Add(-time.Second)},
			{Secret: "db", LeaseID: ids[1], RevokeAt: time.Now().Add(10 * time.Second)},
		}
		if err := state.Save(f.stateDir, st); err != nil {
			t.Fatal(err)
		}
		f.start()
		time.Sleep(time.Second)
		if v.alive(ids[0]) || !v.alive(ids[1]) {
			t.Fatalf("after start: overdue lease alive=%v (want false), lease in grace alive=%v (want true)", v.alive(ids[0]), v.alive(ids[1]))
		}
		time.Sleep(10 * time.Second)
		if v.alive(ids[1]) {
			t.Error("the second lease was not revoked at its revoke_at")
		}
		if r := f.state().Retiring; len(r) != 0 {
			t.Errorf("retiring = %+v; want none", r)
		}
		f.stop()
	})
}

func TestNotifyURLAfterRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second
		f := newFixture(t, v, dbSpec)
		var mu sync.Mutex
		var bodies []string
		f.notify = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, r.Method+" "+r.URL.String()+" "+string(b))
			mu.Unlock()
			return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
		})}
		f.start("--notify-url", "http://127.0.0.1:8080/-/reload")
		time.Sleep(16 * time.Second)
		mu.Lock()
		got := strings.Join(bodies, "\n")
		mu.Unlock()
		if got != `POST http://127.0.0.1:8080/-/reload {"secret":"db"}` {
			t.Errorf("notifications = %q; want one POST naming db", got)
		}
		f.stop()
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// realFixture is a fixture whose vault-renew runs as main runs it
// (inotify watch, real Vault client) against the fake Vault over HTTP,
// listening on a free port, in real time.
func realFixture(t *testing.T, args ...string) (*fixture, string) {
	t.Helper()
	return realFixtureWatch(t, true, args...)
}

// realFixtureWatch is realFixture with or without the inotify watch.
func realFixtureWatch(t *testing.T, watch bool, args ...string) (*fixture, string) {
	t.Helper()
	v := newFakeVault()
	srv := httptest.NewServer(v)
	t.Cleanup(srv.Close)
	f := newFixture(t, v, dbSpec)
	st := f.state()
	st.VaultAddr = srv.URL
	if err := state.Save(f.stateDir, st); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	f.startWith(deps{newClient: vaultclient.New, watch: watch}, append([]string{"--listen", addr}, args...)...)
	t.Cleanup(func() {
		f.cancel()
		f.wait()
	})
	waitFor(t, 5*time.Second, func() bool { code, _ := httpGet("http://" + addr + "/readyz"); return code == 200 })
	return f, "http://" + addr
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("condition not met within %s", d)
		}
	}
}

// exitsPromptly cancels the run as SIGTERM does and checks it ends with
// 0 in under a second.
func (f *fixture) exitsPromptly() {
	f.t.Helper()
	began := time.Now()
	f.cancel()
	code := f.wait()
	if took := time.Since(began); took > time.Second {
		f.t.Errorf("took %s to exit after SIGTERM; want under 1s", took)
	}
	if code != 0 {
		f.t.Errorf("exit code %d; want 0", code)
	}
	f.checkNoSecretsLogged()
}

func TestRunServesHTTPAndExitsPromptly(t *testing.T) {
	t.Parallel()
	f, url := realFixture(t, "--revoke-on-exit")
	st := f.state()
	code, body := httpGet(url + "/metrics")
	if code != 200 || !regexp.MustCompile(`(?m)^podlease_secret_expiry_timestamp_seconds\{secret="db"\} \d{10}`).MatchString(body) {
		t.Errorf("/metrics over HTTP = %d, lacking the db expiry:\n%s", code, body)
	}
	if code, body := httpGet(url + "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}

	f.exitsPromptly()
	if f.v.alive(st.Secrets[0].LeaseID) || f.v.tokenAlive(st.Token.Accessor) {
		t.Error("--revoke-on-exit left the lease or the token alive")
	}
	if _, err := os.Stat(filepath.Join(f.secretsDir, "db")); !os.IsNotExist(err) {
		t.Errorf("--revoke-on-exit left the secret file: %v", err)
	}
	if after, err := state.Load(f.stateDir); err != nil || after.RevokedAt == nil {
		t.Errorf("state.json not marked revoked (%v)", err)
	}
	if code, _ := httpGet(url + "/healthz"); code != 0 {
		t.Error("the HTTP server still answers after exit")
	}
}

// TestVaultRevokeIsNoticedAtOnce runs the real vault-revoke while
// vault-renew sleeps until a renewal an hour away.
func TestVaultRevokeIsNoticedAtOnce(t *testing.T) {
	t.Parallel()
	f, url := realFixture(t)
	time.Sleep(100 * time.Millisecond) // past the token renewal at start
	_, _, renewals, tokenRenewals := f.v.counts()
	if err := revocation.Revoke(context.Background(), f.stateDir, f.secretsDir, newTestLogger(f.logs)); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	waitFor(t, time.Second, func() bool { code, _ := httpGet(url + "/readyz"); return code == 503 })
	t.Logf("/readyz turned 503 %s after vault-revoke", time.Since(began).Round(time.Millisecond))
	code, body := httpGet(url + "/metrics")
	if code != 200 || !strings.Contains(body, "\npodlease_revoked 1\n") {
		t.Errorf("/metrics after vault-revoke lacks podlease_revoked 1")
	}
	if !f.running() {
		t.Fatal("vault-renew exited after vault-revoke; want it to wait for SIGTERM")
	}
	if _, _, r, tr := f.v.counts(); r != renewals || tr != tokenRenewals {
		t.Errorf("Vault calls after vault-revoke: renewals %d→%d, token renewals %d→%d", renewals, r, tokenRenewals, tr)
	}
	f.exitsPromptly()
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestStaticCredentialsRereadAfterVaultRotates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.staticPeriod, v.staticDelay = 30*time.Second, 1500*time.Millisecond
		f := newFixture(t, v, spec{name: "pg", path: "database/static-creds/app-static", format: "json"})
		file := filepath.Join(f.secretsDir, "pg")
		before, _ := os.ReadFile(file)
		var mu sync.Mutex
		posts := 0
		f.notify = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			posts++
			mu.Unlock()
			return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
		})}
		f.start("--notify-url", "http://127.0.0.1:1/")
		time.Sleep(29 * time.Second)
		if now, _ := os.ReadFile(file); !bytes.Equal(now, before) {
			t.Errorf("file changed before Vault rotated the password:\n%s\n%s", before, now)
		}
		// Vault rotates at 31.5s; vault-renew reads at 31s (ttl 0, same
		// password), then once a second until the password changes.
		time.Sleep(4 * time.Second)
		after, _ := os.ReadFile(file)
		if !bytes.Contains(after, []byte("static-pw-1-topsecret")) {
			t.Errorf("file 33s in = %s; want the rotated password", after)
		}
		if got := f.metric(`podlease_secret_rotations_total{secret="pg"}`); got != 1 {
			t.Errorf("rotations = %v; want 1", got)
		}
		mu.Lock()
		if posts != 1 {
			t.Errorf("%d notifications; want 1, for the rotation only", posts)
		}
		mu.Unlock()
		f.stop()
	})
}

func TestTemplateIsRenderedAgainOnRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second
		v.kv["secret/data/app"] = map[string]any{"host": "db.example"}
		tmpl := `postgres://{{ .Data.username }}:{{ .Data.password }}@{{ with secret "secret/data/app" }}{{ .Data.data.host }}{{ end }}/app` + "\n"
		f := newFixture(t, v, spec{name: "app", path: "secret/data/app", format: "json"}, spec{name: "dsn", path: "database/creds/app", template: tmpl})
		before, _ := os.ReadFile(filepath.Join(f.secretsDir, "dsn"))
		f.start()
		time.Sleep(15 * time.Second)
		b, err := os.ReadFile(filepath.Join(f.secretsDir, "dsn"))
		if err != nil {
			t.Fatal(err)
		}
		st := f.state()
		if st.Secrets[1].Template != tmpl || st.Secrets[1].Format != "" {
			t.Errorf("state.json lost the template: %+v", st.Secrets[1])
		}
		m := regexp.MustCompile(`^postgres://(v-app-\d+):pw-\d+-topsecret@db.example/app\n$`).FindSubmatch(b)
		if m == nil || bytes.Contains(before, m[1]) {
			t.Errorf("dsn file after rotation = %q (before: %q); want the template rendered with a new credential", b, before)
		}
		f.stop()
	})
}
