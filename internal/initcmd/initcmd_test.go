package initcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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

	"github.com/podlease/podlease/internal/state"
)

const (
	fakeToken    = "hvs.CAESIFAKE-token-that-must-never-be-logged"
	fakePassword = "A1a-pw-that-must-never-be-logged"
	fakeAPIKey   = "k-api-key-that-must-never-be-logged"
	jwtFile      = "testdata/sa-token"
)

// fakeVault is just enough of Vault for vault-init: kubernetes login,
// reads, and revoke-self. Its behaviour is set before the run.
type fakeVault struct {
	loginStatus int
	loginError  string
	// readStatus gives, per path, the statuses of successive reads
	// (the last one repeats); 200 serves the path's secret.
	readStatus map[string][]int
	// answers are extra reads by path, with their status and body.
	answers map[string]answer

	mu     sync.Mutex
	calls  map[string]int // "METHOD /v1/path"
	logins []map[string]any
	// revoked are the lease ids revoked one by one.
	revoked []string
}

type answer struct {
	status int
	body   string
}

var secretsByPath = map[string]string{
	"database/creds/app": `{"lease_id":"database/creds/app/Lx1","lease_duration":3600,"renewable":true,"data":{"username":"v-kubernetes-web-x1","password":"` + fakePassword + `"}}`,
	"secret/data/app":    `{"data":{"data":{"api_key":"` + fakeAPIKey + `"},"metadata":{"version":1}}}`,
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.Path
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[key]++
	n := f.calls[key]
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fail := func(status int, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
	}
	switch {
	case r.Method == "PUT" && r.URL.Path == "/v1/auth/kubernetes/login":
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.logins = append(f.logins, body)
		f.mu.Unlock()
		if f.loginStatus != 0 && f.loginStatus != 200 {
			fail(f.loginStatus, f.loginError)
			return
		}
		io.WriteString(w, `{"auth":{"client_token":"`+fakeToken+`","accessor":"acc-web-1","lease_duration":7200,"renewable":true,"policies":["default","web-db"]}}`)
	case r.Method == "PUT" && r.URL.Path == "/v1/sys/leases/revoke":
		if r.Header.Get("X-Vault-Token") != fakeToken {
			fail(403, "permission denied")
			return
		}
		var body struct {
			LeaseID string `json:"lease_id"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.revoked = append(f.revoked, body.LeaseID)
		f.mu.Unlock()
		w.WriteHeader(204)
	case r.URL.Path == "/v1/auth/token/revoke-self":
		if r.Header.Get("X-Vault-Token") != fakeToken {
			fail(403, "permission denied")
			return
		}
		w.WriteHeader(204)
	case r.Method == "GET":
		if r.Header.Get("X-Vault-Token") != fakeToken {
			fail(403, "permission denied")
			return
		}
		path := strings.TrimPrefix(r.URL.Path, "/v1/")
		status := 200
		if seq := f.readStatus[path]; len(seq) > 0 {
			status = seq[min(n, len(seq))-1]
		}
		body, ok := secretsByPath[path]
		if a, given := f.answers[path]; given && status == 200 {
			w.WriteHeader(a.status)
			io.WriteString(w, a.body)
			return
		}
		switch {
		case status == 403:
			fail(403, "1 error occurred:\n\t* permission denied\n\n")
		case status != 200:
			fail(status, "internal error")
		case !ok:
			w.WriteHeader(404)
		default:
			io.WriteString(w, body)
		}
	default:
		fail(405, "unsupported path")
	}
}

func (f *fakeVault) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key]
}

func (f *fakeVault) start(t *testing.T) string {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

type dirs struct{ root, secrets, state string }

func newDirs(t *testing.T) dirs {
	root := t.TempDir()
	return dirs{root, filepath.Join(root, "secrets"), filepath.Join(root, "state")}
}

func (d dirs) flags() []string {
	return []string{"--secrets-dir", d.secrets, "--state-dir", d.state}
}

func runInit(t *testing.T, args []string, env map[string]string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := Run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	r := result{code, stdout.String(), stderr.String(), time.Since(start)}
	for _, secret := range []string{fakeToken, fakePassword, fakeAPIKey, strings.TrimSpace(readFile(t, jwtFile))} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("a credential appears in the output:\n%s", r.stderr)
		}
	}
	return r
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// files lists every file under dir (relative names), so a test can say
// exactly what a run left behind.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string // after the dir flags
		env  map[string]string
		want string // in stderr
	}{
		{name: "unknown flag", args: []string{"--secret", "db=database/creds/app", "--role", "web", "--bogus"}, want: "unknown flag: --bogus"},
		{name: "stray argument", args: []string{"--secret", "db=database/creds/app", "--role", "web", "db=database/creds/app"}, want: `unexpected argument "db=database/creds/app"`},
		{name: "secret without =", args: []string{"--secret", "db", "--role", "web"}, want: `--secret "db": want NAME=PATH`},
		{name: "bad secret name", args: []string{"--secret", "../token=database/creds/app", "--role", "web"}, want: `name "../token"`},
		{name: "no secret", args: []string{"--role", "web"}, want: "--secret NAME=PATH is required"},
		{name: "format for unknown secret", args: []string{"--secret", "db=database/creds/app", "--role", "web", "--format", "x=env"}, want: `--format "x=env": no --secret is named "x"`},
		{name: "template file missing", args: []string{"--secret", "db=database/creds/app", "--role", "web", "--template", "db=testdata/nope"}, want: `--template "db=testdata/nope"`},
		{name: "no role", args: []string{"--secret", "db=database/creds/app"}, want: "--role is required"},
		{name: "bad file mode", args: []string{"--secret", "db=database/creds/app", "--role", "web", "--file-mode", "640x"}, want: `--file-mode: file mode "640x"`},
		{name: "bad timeout", args: []string{"--secret", "db=database/creds/app", "--role", "web", "--timeout", "soon"}, want: `"soon" for "--timeout"`},
		{name: "bad timeout from env", args: []string{"--secret", "db=database/creds/app", "--role", "web"}, env: map[string]string{"PODLEASE_TIMEOUT": "-"}, want: "PODLEASE_TIMEOUT"},
		{name: "bad log level", args: []string{"--secret", "db=database/creds/app", "--role", "web", "--log-level", "loud"}, want: `--log-level "loud"`},
		{name: "bad log format", args: []string{"--secret", "db=database/creds/app", "--role", "web", "--log-format", "xml"}, want: `--log-format "xml"`},
		{name: "token lookup", args: []string{"--secret", "x=auth/token/lookup-self", "--role", "web"}, want: `--secret "x=auth/token/lookup-self": Vault answers auth/token/lookup-self with a Vault token`},
		{name: "token create under a namespace", args: []string{"--secret", "x=/ns1//auth/token/create-orphan", "--role", "web"}, want: `Vault answers ns1//auth/token/create-orphan with a Vault token`},
		{name: "wrapping from env", args: []string{"--role", "web"}, env: map[string]string{"PODLEASE_SECRET": "w=sys/wrapping/lookup"}, want: "sys/wrapping/lookup with a Vault token"},
		{name: "wrapping itself", args: []string{"--secret", "w=sys/wrapping", "--role", "web"}, want: "sys/wrapping with a Vault token"},
		{name: "no vault address", args: []string{"--secret", "db=database/creds/app", "--role", "web"}, env: map[string]string{"VAULT_ADDR": ""}, want: "--vault-addr (or VAULT_ADDR) is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDirs(t)
			env := map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"}
			for k, v := range tc.env {
				env[k] = v
			}
			r := runInit(t, append(append(d.flags(), "--jwt-file", jwtFile), tc.args...), env)
			if r.code != 2 {
				t.Errorf("exit code %d, want 2", r.code)
			}
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "Run 'vault-init --help' for usage.") {
				t.Errorf("stderr does not contain %q and the usage hint:\n%s", tc.want, r.stderr)
			}
			if got := files(t, d.root); len(got) != 0 {
				t.Errorf("a usage error wrote %v", got)
			}
			if _, err := os.Stat(d.secrets); !os.IsNotExist(err) {
				t.Error("a usage error created the secrets dir")
			}
		})
	}
}

func TestRunSameDirs(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "shared")
	r := runInit(t, []string{"--secrets-dir", dir, "--state-dir", dir + "/", "--secret", "db=database/creds/app", "--role", "web", "--jwt-file", jwtFile},
		map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"})
	if r.code != 2 || !strings.Contains(r.stderr, "--secrets-dir and --state-dir are both") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Error("the dir was created")
	}
}

func TestRunHelpAndVersion(t *testing.T) {
	t.Parallel()
	r := runInit(t, []string{"--help"}, nil)
	if r.code != 0 {
		t.Errorf("--help exit code %d, want 0", r.code)
	}
	for _, want := range []string{"Usage: vault-init [flags]", "--secret", "--state-dir", "PODLEASE_"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help does not contain %q:\n%s", want, r.stdout)
		}
	}
	r = runInit(t, []string{"--version"}, nil)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "vault-init ") {
		t.Errorf("--version: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestRunUnreachable: with Vault down, vault-init retries until --timeout
// and then fails, never hangs.
func TestRunUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	d := newDirs(t)
	const timeout = 2 * time.Second
	r := runInit(t, append(d.flags(), "--vault-addr", addr, "--role", "web", "--jwt-file", jwtFile, "--secret", "db=database/creds/app", "--timeout", timeout.String()), nil)
	if r.code != 1 {
		t.Errorf("exit code %d, want 1", r.code)
	}
	if r.elapsed > timeout+time.Second {
		t.Errorf("took %v with --timeout %v", r.elapsed, timeout)
	}
	if r.elapsed < timeout-200*time.Millisecond {
		t.Errorf("gave up after %v, before --timeout %v: a refused connection must be retried", r.elapsed, timeout)
	}
	for _, want := range []string{addr, "log in", "timed out", "connection refused", "transient failure, retrying"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	if got := files(t, d.root); len(got) != 0 {
		t.Errorf("a failed run wrote %v", got)
	}
}

func TestRunFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		vault       *fakeVault
		args        []string
		wantCode    int
		want        []string // in stderr
		wantLogins  int
		wantReads   map[string]int
		wantRevoked bool
	}{
		{
			name:       "invalid role fails at once",
			vault:      &fakeVault{loginStatus: 400, loginError: `invalid role name "web"`},
			args:       []string{"--secret", "db=database/creds/app"},
			wantCode:   1,
			want:       []string{`as role \"web\"`, `invalid role name \"web\" (HTTP 400)`, `check that role \"web\" exists at auth/kubernetes`},
			wantLogins: 1,
		},
		{
			name:        "read denied fails at once and revokes the token",
			vault:       &fakeVault{readStatus: map[string][]int{"database/creds/app": {403}}},
			args:        []string{"--secret", "app=secret/data/app", "--secret", "db=database/creds/app"},
			wantCode:    1,
			want:        []string{"permission denied reading database/creds/app", `check the policy bound to role \"web\"`, "web-db"},
			wantLogins:  1,
			wantReads:   map[string]int{"secret/data/app": 1, "database/creds/app": 1},
			wantRevoked: true,
		},
		{
			name:        "missing secret",
			vault:       &fakeVault{},
			args:        []string{"--secret", "db=database/creds/nope"},
			wantCode:    1,
			want:        []string{"no secret at database/creds/nope"},
			wantLogins:  1,
			wantReads:   map[string]int{"database/creds/nope": 1},
			wantRevoked: true,
		},
		{
			name:        "template with a missing field",
			vault:       &fakeVault{},
			args:        []string{"--secret", "db=database/creds/app", "--template", "db=testdata/missingkey.tmpl"},
			wantCode:    1,
			want:        []string{`template testdata/missingkey.tmpl for secret \"db\"`, "no_such_field"},
			wantLogins:  1,
			wantReads:   map[string]int{"database/creds/app": 1},
			wantRevoked: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := tc.vault
			addr := f.start(t)
			d := newDirs(t)
			args := append(d.flags(), "--role", "web", "--jwt-file", jwtFile, "--timeout", "30s")
			r := runInit(t, append(args, tc.args...), map[string]string{"VAULT_ADDR": addr})
			if r.code != tc.wantCode {
				t.Errorf("exit code %d, want %d", r.code, tc.wantCode)
			}
			if r.elapsed > 3*time.Second {
				t.Errorf("took %v: a permanent failure must not be retried", r.elapsed)
			}
			for _, want := range tc.want {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
				}
			}
			if n := f.count("PUT /v1/auth/kubernetes/login"); n != tc.wantLogins {
				t.Errorf("%d logins, want %d", n, tc.wantLogins)
			}
			for path, want := range tc.wantReads {
				if n := f.count("GET /v1/" + path); n != want {
					t.Errorf("%d reads of %s, want %d", n, path, want)
				}
			}
			if revoked := f.count("PUT /v1/auth/token/revoke-self") == 1; revoked != tc.wantRevoked {
				t.Errorf("token revoked: %v, want %v", revoked, tc.wantRevoked)
			}
			if got := files(t, d.secrets); len(got) != 0 {
				t.Errorf("secret files written: %v", got)
			}
			if got := files(t, d.state); len(got) != 0 {
				t.Errorf("state files written: %v", got)
			}
		})
	}
}

func TestRunWritesFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		vault     *fakeVault
		args      []string
		env       map[string]string
		wantMode  os.FileMode
		wantFiles map[string]string // secret file -> content
		wantReads map[string]int
	}{
		{
			name:     "flags, with a 500 retried",
			vault:    &fakeVault{readStatus: map[string][]int{"database/creds/app": {500, 200}}},
			args:     []string{"--role", "web", "--jwt-file", jwtFile, "--secret", "db=database/creds/app", "--format", "db=env", "--secret", "app=secret/data/app"},
			wantMode: 0o440,
			wantFiles: map[string]string{
				"db":  "PASSWORD=\"" + fakePassword + "\"\nUSERNAME=\"v-kubernetes-web-x1\"\n",
				"app": "{\n  \"api_key\": \"" + fakeAPIKey + "\"\n}\n",
			},
			wantReads: map[string]int{"database/creds/app": 2, "secret/data/app": 1},
		},
		{
			name:  "environment, template, yaml and another mode",
			vault: &fakeVault{},
			env: map[string]string{
				"PODLEASE_ROLE":      "web",
				"PODLEASE_JWT_FILE":  jwtFile,
				"PODLEASE_SECRET":    "db=database/creds/app\nkv=secret/data/app",
				"PODLEASE_TEMPLATE":  "db=testdata/app.tmpl",
				"PODLEASE_FORMAT":    "kv=yaml",
				"PODLEASE_FILE_MODE": "0400",
			},
			wantMode: 0o400,
			wantFiles: map[string]string{
				"db": "DATABASE_URL=postgresql://v-kubernetes-web-x1:" + fakePassword + "@db:5432/app\nAPI_KEY=" + fakeAPIKey + "\n",
				"kv": "api_key: \"" + fakeAPIKey + "\"\n",
			},
			wantReads: map[string]int{"database/creds/app": 1, "secret/data/app": 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := tc.vault
			addr := f.start(t)
			d := newDirs(t)
			env := map[string]string{"VAULT_ADDR": addr}
			for k, v := range tc.env {
				env[k] = v
			}
			r := runInit(t, append(d.flags(), append(tc.args, "--timeout", "20s", "--log-level", "debug")...), env)
			if r.code != 0 {
				t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
			}
			for path, want := range tc.wantReads {
				if n := f.count("GET /v1/" + path); n != want {
					t.Errorf("%d reads of %s, want %d", n, path, want)
				}
			}
			if n := f.count("PUT /v1/auth/token/revoke-self"); n != 0 {
				t.Error("a successful run revoked its token")
			}
			f.mu.Lock()
			logins := slices.Clone(f.logins)
			f.mu.Unlock()
			if len(logins) != 1 || logins[0]["role"] != "web" || logins[0]["jwt"] != strings.TrimSpace(readFile(t, jwtFile)) {
				t.Errorf("%d logins, want one as role web with the service-account token", len(logins))
			}

			var names []string
			for name, want := range tc.wantFiles {
				names = append(names, name)
				p := filepath.Join(d.secrets, name)
				if got := readFile(t, p); got != want {
					t.Errorf("%s =\n%q\nwant\n%q", name, got, want)
				}
				assertMode(t, p, tc.wantMode)
			}
			slices.Sort(names)
			if got := files(t, d.secrets); !slices.Equal(got, names) {
				t.Errorf("secrets dir holds %v, want %v", got, names)
			}

			tokenFile := filepath.Join(d.state, state.TokenName)
			if got := readFile(t, tokenFile); got != fakeToken {
				t.Errorf("token file holds %q", got)
			}
			assertMode(t, tokenFile, 0o600)
			assertMode(t, filepath.Join(d.state, state.FileName), 0o600)

			st, err := state.Load(d.state)
			if err != nil {
				t.Fatal(err)
			}
			if st.VaultAddr != addr || st.Auth.Role != "web" || st.Auth.Mount != "kubernetes" || st.Token.Accessor != "acc-web-1" || st.Token.TTL != 7200 || !st.Token.Owned {
				t.Errorf("state %+v", st)
			}
			if time.Until(st.Token.ExpiresAt) < time.Hour {
				t.Errorf("token expires at %v, want about 2h from now", st.Token.ExpiresAt)
			}
			if len(st.Secrets) != len(tc.wantFiles) {
				t.Fatalf("state has %d secrets, want %d", len(st.Secrets), len(tc.wantFiles))
			}
			for _, s := range st.Secrets {
				if s.File != filepath.Join(d.secrets, s.Name) {
					t.Errorf("secret %s file %s", s.Name, s.File)
				}
				if s.Path == "database/creds/app" && (s.Kind != state.KindLeased || s.LeaseID != "database/creds/app/Lx1" || s.LeaseDuration != 3600) {
					t.Errorf("db secret in state: %+v", s)
				}
				if s.Path == "secret/data/app" && s.Kind != state.KindKV {
					t.Errorf("kv secret in state: %+v", s)
				}
			}
			raw := readFile(t, filepath.Join(d.state, state.FileName))
			for _, secret := range []string{fakeToken, fakePassword, fakeAPIKey} {
				if strings.Contains(raw, secret) {
					t.Errorf("state.json holds a secret value")
				}
			}
		})
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s has mode %#o, want %#o", path, fi.Mode().Perm(), want)
	}
}

// kv2Invalid is KV v2's answer to a path without data/: a 404 that Vault's
// client returns as a secret without data, and no error.
const kv2Invalid = `{"request_id":"r-1","lease_id":"","renewable":false,"lease_duration":0,"data":null,"wrap_info":null,"warnings":["Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation."],"auth":null}`

// TestRunKV2SecretInCredsFolder: a KV v2 secret in a folder named creds,
// given by its short path, is read with data/ when Vault says which mount
// holds it, and fails naming the path when it does not; it never becomes
// an empty file.
func TestRunKV2SecretInCredsFolder(t *testing.T) {
	t.Parallel()
	const mounts = "sys/internal/ui/mounts/secret/creds/stripe"
	for _, tc := range []struct {
		name     string
		answers  map[string]answer
		wantCode int
		want     []string // in stderr
		wantFile string
	}{
		{
			name: "mount known",
			answers: map[string]answer{
				"secret/creds/stripe":      {404, kv2Invalid},
				mounts:                     {200, `{"request_id":"r-2","data":{"path":"secret/","type":"kv","options":{"version":"2"}}}`},
				"secret/data/creds/stripe": {200, `{"request_id":"r-3","data":{"data":{"api_key":"` + fakeAPIKey + `"},"metadata":{"version":1}}}`},
			},
			wantFile: "{\n  \"api_key\": \"" + fakeAPIKey + "\"\n}\n",
		},
		{
			name: "mount lookup denied",
			answers: map[string]answer{
				"secret/creds/stripe": {404, kv2Invalid},
				mounts:                {403, `{"errors":["permission denied"]}`},
			},
			wantCode: 1,
			want:     []string{"no secret at secret/creds/stripe", "Invalid path for a versioned K/V secrets engine", "secret/data/NAME"},
		},
		{
			name:     "200 without data",
			answers:  map[string]answer{"secret/creds/stripe": {200, `{"request_id":"r-1","lease_id":"","data":null,"auth":null}`}},
			wantCode: 1,
			want:     []string{"no secret at secret/creds/stripe: check the path"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeVault{answers: tc.answers}
			addr := f.start(t)
			d := newDirs(t)
			r := runInit(t, append(d.flags(), "--role", "web", "--jwt-file", jwtFile, "--timeout", "20s", "--secret", "stripe=secret/creds/stripe"), map[string]string{"VAULT_ADDR": addr})
			if r.code != tc.wantCode {
				t.Fatalf("exit code %d, want %d\n%s", r.code, tc.wantCode, r.stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
				}
			}
			if tc.wantCode != 0 {
				if got := files(t, d.root); len(got) != 0 {
					t.Errorf("a failed run left %v", got)
				}
				return
			}
			if got := readFile(t, filepath.Join(d.secrets, "stripe")); got != tc.wantFile {
				t.Errorf("stripe = %q, want %q", got, tc.wantFile)
			}
			st, err := state.Load(d.state)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Secrets) != 1 || st.Secrets[0].VaultPath() != "secret/data/creds/stripe" {
				t.Errorf("state secrets %+v: want vault-renew to read secret/data/creds/stripe", st.Secrets)
			}
		})
	}
}

// TestRunUserTokenFailureRevokesLeases: with a token the user gave, which
// vault-init does not revoke, a failure after a leased read revokes that
// lease one by one, so the database user does not live its full TTL.
func TestRunUserTokenFailureRevokesLeases(t *testing.T) {
	t.Parallel()
	f := &fakeVault{
		readStatus: map[string][]int{"secret/data/app": {403}},
		answers: map[string]answer{
			"auth/token/lookup-self": {200, `{"request_id":"r-1","data":{"accessor":"acc-user-1","ttl":7200,"renewable":true,"policies":["default","web-db"],"type":"service"}}`},
		},
	}
	addr := f.start(t)
	d := newDirs(t)
	r := runInit(t, append(d.flags(), "--auth-method", "token", "--timeout", "20s", "--secret", "db=database/creds/app", "--secret", "app=secret/data/app"),
		map[string]string{"VAULT_ADDR": addr, "VAULT_TOKEN": fakeToken})
	if r.code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", r.code, r.stderr)
	}
	f.mu.Lock()
	revoked := slices.Clone(f.revoked)
	f.mu.Unlock()
	if !slices.Equal(revoked, []string{"database/creds/app/Lx1"}) {
		t.Errorf("leases revoked: %v, want the one this run obtained", revoked)
	}
	if n := f.count("PUT /v1/auth/token/revoke-self"); n != 0 {
		t.Errorf("revoked the user's token %d times: it is not vault-init's", n)
	}
	if got := files(t, d.root); len(got) != 0 {
		t.Errorf("a failed run left %v", got)
	}
}

// TestRunBadClientVariable: a VAULT_* variable Vault's client cannot use
// is a usage error (exit 2) naming the variable, before any directory is
// created. Vault's client reads the process environment, so the cases
// set it and cannot run in parallel.
func TestRunBadClientVariable(t *testing.T) {
	for _, tc := range []struct {
		name, variable, value string
		want                  string // in stderr
		hidden                string // never in stderr
	}{
		{name: "missing CA file", variable: "VAULT_CACERT", value: "/nonexistent/ca.pem", want: "VAULT_CACERT=/nonexistent/ca.pem"},
		{name: "skip verify not a boolean", variable: "VAULT_SKIP_VERIFY", value: "maybe", want: "VAULT_SKIP_VERIFY"},
		{name: "proxy with a password", variable: "VAULT_HTTP_PROXY", value: "http://u:proxy-pw-must-not-show@proxy:%zz", want: "VAULT_HTTP_PROXY", hidden: "proxy-pw-must-not-show"},
		// The URL parser quotes the escape it stumbled on by itself.
		{name: "proxy with a bad escape in its password", variable: "VAULT_HTTP_PROXY", value: "http://u:hunter%zz2@proxy:3128", want: "VAULT_HTTP_PROXY", hidden: "%zz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.variable, tc.value)
			d := newDirs(t)
			r := runInit(t, append(d.flags(), "--role", "web", "--jwt-file", jwtFile, "--secret", "db=database/creds/app"), map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"})
			if r.code != 2 {
				t.Errorf("exit code %d, want 2\n%s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "Run 'vault-init --help' for usage.") {
				t.Errorf("stderr does not contain %q and the usage hint:\n%s", tc.want, r.stderr)
			}
			if tc.hidden != "" && strings.Contains(r.stderr, tc.hidden) {
				t.Errorf("stderr shows (a piece of) the proxy's password:\n%s", strings.ReplaceAll(r.stderr, tc.hidden, "[hidden]"))
			}
			if _, err := os.Stat(d.secrets); !os.IsNotExist(err) {
				t.Error("the secrets dir was created")
			}
			if _, err := os.Stat(d.state); !os.IsNotExist(err) {
				t.Error("the state dir was created")
			}
		})
	}
}
