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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/login"
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

// newDBFixture is newFixture for one database credential (dbSpec) on a
// new fake Vault, which set (if not nil) configures first.
func newDBFixture(t *testing.T, set func(v *fakeVault)) (*fakeVault, *fixture) {
	t.Helper()
	v := newFakeVault()
	if set != nil {
		set(v)
	}
	return v, newFixture(t, v, dbSpec)
}

// newSlowDBFixture is newDBFixture with leases of ttl, and a Vault whose
// every answer takes latency once vault-init is done; it returns the
// lease vault-init left.
func newSlowDBFixture(t *testing.T, ttl, latency time.Duration) (*fakeVault, *fixture, string) {
	t.Helper()
	v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = ttl })
	v.mu.Lock()
	v.latency = latency
	v.mu.Unlock()
	return v, f, f.state().Secrets[0].LeaseID
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
	// A test that stops early still ends the run inside its bubble.
	f.t.Cleanup(func() {
		cancel()
		f.wait()
	})
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

// wantLog checks that vault-renew logged line.
func (f *fixture) wantLog(line string) {
	f.t.Helper()
	if !strings.Contains(f.logs.String(), line) {
		f.t.Errorf("no log line %q in:\n%s", line, f.logs)
	}
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

// damages are what can happen to the state dir under a running sidecar.
var damages = []struct {
	name string
	do   func(dir string) error
}{
	{"state.json renamed away", func(dir string) error {
		return os.Rename(filepath.Join(dir, state.FileName), filepath.Join(dir, "moved.json"))
	}},
	{"state.json deleted", func(dir string) error { return os.Remove(filepath.Join(dir, state.FileName)) }},
	{"state.json corrupt", func(dir string) error {
		return os.WriteFile(filepath.Join(dir, state.FileName), []byte("{garbage"), 0o600)
	}},
	{"token and state.json deleted", func(dir string) error {
		if err := os.Remove(filepath.Join(dir, state.TokenName)); err != nil {
			return err
		}
		return os.Remove(filepath.Join(dir, state.FileName))
	}},
}
