package login

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// saToken is shaped like a projected service-account token.
var saToken = b64(`{"alg":"RS256","kid":"k1"}`) + "." +
	b64(`{"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:default:web","aud":["vault"],"exp":4102444800}`) +
	".c2lnbmF0dXJlLW9mLXRoZS1wb2Q"

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadJWT(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		content *string // nil: no file
		dir     bool
		want    string // substring of the error; "" for success
	}{
		{name: "valid", content: ptr(saToken)},
		{name: "valid with trailing newline", content: ptr(saToken + "\n")},
		{name: "missing file", want: "no such file or directory"},
		{name: "directory", dir: true, want: "not a regular file"},
		{name: "empty", content: ptr(""), want: "file is empty"},
		{name: "blank", content: ptr(" \n\n"), want: "file is empty"},
		{name: "garbage", content: ptr("SECRETCONTENT-not-a-jwt"), want: "does not hold a JWT (want header.payload.signature)"},
		{name: "two segments", content: ptr(b64(`{"alg":"RS256"}`) + "." + b64(`{"sub":"SECRETCONTENT"}`)), want: "want header.payload.signature"},
		{name: "four segments", content: ptr(saToken + ".SECRETCONTENT"), want: "want header.payload.signature"},
		{name: "non-JSON header", content: ptr(b64("SECRETCONTENT") + "." + b64(`{}`) + ".sig"), want: "its header is not base64url JSON"},
		{name: "non-base64 header", content: ptr("SECRET!CONTENT." + b64(`{}`) + ".sig"), want: "its header is not base64url JSON"},
		{name: "non-JSON payload", content: ptr(b64(`{"alg":"RS256"}`) + "." + b64("SECRETCONTENT") + ".sig"), want: "its payload is not base64url JSON"},
		{name: "padded base64", content: ptr(base64.URLEncoding.EncodeToString([]byte(`{"alg":"RS1"}`)) + "." + b64("{}") + ".sig"), want: "its header is not base64url JSON"},
		{name: "too large", content: ptr(strings.Repeat("SECRETCONTENT", 6000)), want: "too large for a credential file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "sa-token")
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.dir {
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ReadJWT(path)
			if tc.want == "" {
				if err != nil || got != saToken {
					t.Fatalf("ReadJWT = %q, %v; want the token", got, err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "--jwt-file "+path) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to name --jwt-file %s and say %q", msg, path, tc.want)
			}
			for _, leak := range []string{"SECRET", b64("SECRETCONTENT"), b64(`{"sub":"SECRETCONTENT"}`)} {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q shows the file's content", msg)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestValidate(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	withToken := func(k string) string {
		if k == "VAULT_TOKEN" {
			return "hvs.x"
		}
		return ""
	}
	for _, tc := range []struct {
		name      string
		auth      state.Auth
		getenv    func(string) string
		want      string // substring of the error; "" for success
		wantMount string
	}{
		{name: "kubernetes", auth: state.Auth{Method: Kubernetes, Role: "web", JWTFile: DefaultJWTFile}, wantMount: "kubernetes"},
		{name: "kubernetes custom mount", auth: state.Auth{Method: Kubernetes, Mount: "/k8s-prod/", Role: "web", JWTFile: "/t"}, wantMount: "k8s-prod"},
		{name: "kubernetes without role", auth: state.Auth{Method: Kubernetes, JWTFile: DefaultJWTFile}, want: "--role is required with --auth-method kubernetes"},
		{name: "jwt without role", auth: state.Auth{Method: JWT, JWTFile: "/t"}, want: "--role is required with --auth-method jwt"},
		{name: "jwt without file", auth: state.Auth{Method: JWT, Role: "web"}, want: "--jwt-file is required"},
		{name: "approle", auth: state.Auth{Method: AppRole, RoleIDFile: "/r", SecretIDFile: "/s"}, wantMount: "approle"},
		{name: "approle without secret id", auth: state.Auth{Method: AppRole, RoleIDFile: "/r"}, want: "--role-id-file and --secret-id-file are required"},
		{name: "token from env", auth: state.Auth{Method: Token}, getenv: withToken, wantMount: "token"},
		{name: "token from file", auth: state.Auth{Method: Token, TokenFile: "/t"}, wantMount: "token"},
		{name: "token from nowhere", auth: state.Auth{Method: Token}, want: "VAULT_TOKEN or --token-file"},
		{name: "unknown method", auth: state.Auth{Method: "ldap"}, want: `--auth-method "ldap"`},
		{name: "empty method", auth: state.Auth{}, want: `--auth-method ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			getenv := tc.getenv
			if getenv == nil {
				getenv = noEnv
			}
			a := tc.auth
			err := Validate(&a, getenv)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err = %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Mount != tc.wantMount {
				t.Errorf("mount %q, want %q", a.Mount, tc.wantMount)
			}
		})
	}
}

// fakeVault answers logins the way Vault does, and records the requests.
type fakeVault struct {
	mu        sync.Mutex
	requests  []string // "METHOD /path"
	bodies    []map[string]any
	status    int    // for logins; 0: 200
	errMsg    string // Vault's error message with status
	unmounted bool   // no auth method answers a login without credentials with 400
	numUses   int    // the issued or looked-up token's num_uses
}

const fakeToken = "hvs.FAKE-issued-token-do-not-log"

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	f.bodies = append(f.bodies, body)
	status, msg := f.status, f.errMsg
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if status != 0 && len(body) == 0 && strings.HasSuffix(r.URL.Path, "/login") && !f.unmounted {
		// A login without credentials, at a mounted auth method.
		w.WriteHeader(400)
		io.WriteString(w, `{"errors":["missing role"]}`)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
		return
	}
	if r.URL.Path == "/v1/auth/token/lookup-self" {
		if r.Header.Get("X-Vault-Token") != "hvs.given" {
			w.WriteHeader(403)
			io.WriteString(w, `{"errors":["permission denied"]}`)
			return
		}
		fmt.Fprintf(w, `{"data":{"accessor":"acc-given","ttl":600,"renewable":true,"policies":["default","app"],"num_uses":%d}}`, f.numUses)
		return
	}
	if r.URL.Path == "/v1/auth/token/revoke-self" {
		w.WriteHeader(204)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{
		"client_token": fakeToken, "accessor": "acc-1", "lease_duration": 3600, "renewable": true, "policies": []string{"default", "web-db"}, "num_uses": f.numUses,
	}})
}

// seen returns the requests and bodies so far.
func (f *fakeVault) seen() ([]string, []map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests), slices.Clone(f.bodies)
}

func newFake(t *testing.T, f *fakeVault) string {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestLogin(t *testing.T) {
	t.Parallel()
	jwtFile := writeFile(t, saToken+"\n")
	roleIDFile := writeFile(t, "role-id-123\n")
	secretIDFile := writeFile(t, "secret-id-456\n")
	tokenFile := writeFile(t, "hvs.given\n")
	for _, tc := range []struct {
		name      string
		auth      state.Auth
		env       map[string]string
		status    int
		errMsg    string
		wantPath  string
		wantBody  map[string]any
		wantErr   []string // substrings; nil for success
		probe     bool     // a refused login: expect a probe without credentials
		unmounted bool
		transient bool
		want      state.Token
		wantTok   string
	}{
		{
			name:     "kubernetes",
			auth:     state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: jwtFile},
			wantPath: "PUT /v1/auth/kubernetes/login", wantBody: map[string]any{"role": "web", "jwt": saToken},
			want:    state.Token{Accessor: "acc-1", TTL: 3600, Renewable: true, Policies: []string{"default", "web-db"}, Owned: true, Type: "service"},
			wantTok: fakeToken,
		},
		{
			name:     "kubernetes at another mount",
			auth:     state.Auth{Method: Kubernetes, Mount: "k8s-prod", Role: "web", JWTFile: jwtFile},
			wantPath: "PUT /v1/auth/k8s-prod/login",
			want:     state.Token{Accessor: "acc-1", TTL: 3600, Renewable: true, Policies: []string{"default", "web-db"}, Owned: true, Type: "service"},
			wantTok:  fakeToken,
		},
		{
			name:     "jwt",
			auth:     state.Auth{Method: JWT, Mount: "jwt", Role: "web", JWTFile: jwtFile},
			wantPath: "PUT /v1/auth/jwt/login", wantBody: map[string]any{"role": "web", "jwt": saToken},
			want:    state.Token{Accessor: "acc-1", TTL: 3600, Renewable: true, Policies: []string{"default", "web-db"}, Owned: true, Type: "service"},
			wantTok: fakeToken,
		},
		{
			name:     "approle",
			auth:     state.Auth{Method: AppRole, Mount: "approle", RoleIDFile: roleIDFile, SecretIDFile: secretIDFile},
			wantPath: "PUT /v1/auth/approle/login", wantBody: map[string]any{"role_id": "role-id-123", "secret_id": "secret-id-456"},
			want:    state.Token{Accessor: "acc-1", TTL: 3600, Renewable: true, Policies: []string{"default", "web-db"}, Owned: true, Type: "service"},
			wantTok: fakeToken,
		},
		{
			name:     "token from file is not owned",
			auth:     state.Auth{Method: Token, Mount: "token", TokenFile: tokenFile},
			wantPath: "GET /v1/auth/token/lookup-self",
			want:     state.Token{Accessor: "acc-given", TTL: 600, Renewable: true, Policies: []string{"default", "app"}},
			wantTok:  "hvs.given",
		},
		{
			name:     "token from VAULT_TOKEN",
			auth:     state.Auth{Method: Token, Mount: "token"},
			env:      map[string]string{"VAULT_TOKEN": "hvs.given"},
			wantPath: "GET /v1/auth/token/lookup-self",
			want:     state.Token{Accessor: "acc-given", TTL: 600, Renewable: true, Policies: []string{"default", "app"}},
			wantTok:  "hvs.given",
		},
		{
			name:     "bad token",
			auth:     state.Auth{Method: Token, Mount: "token"},
			env:      map[string]string{"VAULT_TOKEN": "hvs.wrong"},
			wantPath: "GET /v1/auth/token/lookup-self",
			wantErr:  []string{"look up the token from VAULT_TOKEN", "permission denied (HTTP 403)"},
		},
		{
			name:   "kubernetes invalid role",
			auth:   state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: jwtFile},
			status: 400, errMsg: "invalid role name \"web\"",
			wantPath: "PUT /v1/auth/kubernetes/login",
			wantErr:  []string{`log in with kubernetes auth at auth/kubernetes as role "web"`, "(HTTP 400)", `check that role "web" exists at auth/kubernetes`},
		},
		{
			name:   "jwt refused",
			auth:   state.Auth{Method: JWT, Mount: "jwt", Role: "web", JWTFile: jwtFile},
			status: 403, errMsg: "permission denied",
			wantPath: "PUT /v1/auth/jwt/login",
			wantErr:  []string{"auth/jwt", "permission denied (HTTP 403)", "Vault refused the credential"},
			probe:    true,
		},
		{
			name:   "kubernetes: a failed TokenReview",
			auth:   state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: jwtFile},
			status: 403, errMsg: "permission denied",
			wantPath: "PUT /v1/auth/kubernetes/login",
			wantErr:  []string{"auth/kubernetes", "permission denied (HTTP 403)", "the TokenReview API refused the token", "Vault could not call that API", `"login unauthorized"`},
			probe:    true,
		},
		{
			name:   "kubernetes: a binding refuses",
			auth:   state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: jwtFile},
			status: 403, errMsg: "service account name not authorized",
			wantPath: "PUT /v1/auth/kubernetes/login",
			wantErr:  []string{"service account name not authorized (HTTP 403)", "check the role's bindings"},
			probe:    true,
		},
		{
			name:   "nothing mounted there",
			auth:   state.Auth{Method: Kubernetes, Mount: "kubernets", Role: "web", JWTFile: jwtFile},
			status: 403, errMsg: "permission denied", unmounted: true,
			wantPath: "PUT /v1/auth/kubernets/login",
			wantErr:  []string{"auth/kubernets", "permission denied (HTTP 403)", "no auth method is mounted at auth/kubernets: check --auth-mount"},
			probe:    true,
		},
		{
			name:   "vault down",
			auth:   state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: jwtFile},
			status: 503, errMsg: "Vault is sealed",
			wantPath:  "PUT /v1/auth/kubernetes/login",
			wantErr:   []string{"Vault is sealed (HTTP 503)"},
			transient: true,
		},
		{
			name:    "missing jwt file: no request",
			auth:    state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: "/nonexistent/token"},
			wantErr: []string{"--jwt-file /nonexistent/token"},
		},
		{
			name:    "missing secret id file: no request",
			auth:    state.Auth{Method: AppRole, Mount: "approle", RoleIDFile: roleIDFile, SecretIDFile: "/nonexistent/sid"},
			wantErr: []string{"--secret-id-file /nonexistent/sid"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeVault{status: tc.status, errMsg: tc.errMsg, unmounted: tc.unmounted}
			c, err := vaultclient.New(newFake(t, f), "", 5*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Login(context.Background(), c, tc.auth, func(k string) string { return tc.env[k] })
			requests, bodies := f.seen()
			if tc.wantPath == "" && len(requests) != 0 {
				t.Errorf("requests %v, want none", requests)
			}
			if tc.probe {
				// A refused login is followed by one without credentials,
				// to tell a refusal from a mount that does not exist.
				if len(requests) != 2 || requests[1] != tc.wantPath || len(bodies[1]) != 0 {
					t.Fatalf("requests %v, want the login and a probe without credentials, both at %s", requests, tc.wantPath)
				}
				requests = requests[:1]
			}
			if tc.wantPath != "" && (len(requests) != 1 || requests[0] != tc.wantPath) {
				t.Fatalf("requests %v, want [%s]", requests, tc.wantPath)
			}
			for k, v := range tc.wantBody {
				if bodies[0][k] != v {
					t.Errorf("request field %s = %v, want %v", k, bodies[0][k], v)
				}
			}
			if c.Token() != "" {
				t.Error("Login set a token on the caller's client")
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("no error")
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				for _, leak := range []string{saToken, "secret-id-456", "hvs.wrong", "hvs.given"} {
					if strings.Contains(err.Error(), leak) {
						t.Errorf("error %q shows a credential", err)
					}
				}
				if got := vaultclient.Transient(err); got != tc.transient {
					t.Errorf("Transient = %v, want %v", got, tc.transient)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Token != tc.wantTok {
				t.Errorf("token %q, want %q", res.Token, tc.wantTok)
			}
			if got, _ := json.Marshal(res.Info); string(got) != string(must(json.Marshal(tc.want))) {
				t.Errorf("info %s, want %s", got, must(json.Marshal(tc.want)))
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestLoginUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	c, err := vaultclient.New(addr, "", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Login(context.Background(), c, state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: writeFile(t, saToken)}, os.Getenv)
	var le *Error
	if !errors.As(err, &le) || !vaultclient.Transient(err) {
		t.Fatalf("err = %v, want a transient login error", err)
	}
	if !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "is Vault reachable") {
		t.Errorf("error %q does not say Vault is unreachable", err)
	}
}

// TestTokenType: the api package drops a login answer's token_type; a
// token without an accessor is a batch token.
func TestTokenType(t *testing.T) {
	t.Parallel()
	for accessor, want := range map[string]string{"": state.TokenBatch, "acc-1": "service"} {
		if got := tokenType(accessor); got != want {
			t.Errorf("tokenType(%q) = %q; want %q", accessor, got, want)
		}
	}
}

// TestLoginRefusesUseLimitedTokens: a token with num_uses dies, with its
// leases, a few requests in: a login that gets one gives it back and
// fails naming the setting; a given token with a use limit is refused.
func TestLoginRefusesUseLimitedTokens(t *testing.T) {
	t.Parallel()
	jwtFile := writeFile(t, saToken+"\n")
	f := &fakeVault{numUses: 2}
	c := newClient(t, newFake(t, f))
	_, err := Login(context.Background(), c, state.Auth{Method: Kubernetes, Mount: "kubernetes", Role: "web", JWTFile: jwtFile}, os.Getenv)
	if err == nil || !strings.Contains(err.Error(), "limited to 2 uses") || !strings.Contains(err.Error(), "token_num_uses") {
		t.Errorf("login with a use-limited token: %v", err)
	} else if strings.Contains(err.Error(), fakeToken) {
		t.Errorf("the error holds the token: %v", err)
	}
	if reqs, _ := f.seen(); !slices.Contains(reqs, "PUT /v1/auth/token/revoke-self") {
		t.Errorf("the use-limited token was not given back: %v", reqs)
	}

	g := &fakeVault{numUses: 5}
	c = newClient(t, newFake(t, g))
	_, err = Login(context.Background(), c, state.Auth{Method: Token, Mount: "token"}, func(k string) string {
		if k == "VAULT_TOKEN" {
			return "hvs.given"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "limited in uses (num_uses 5)") {
		t.Errorf("a given use-limited token: %v", err)
	}
}

func newClient(t *testing.T, addr string) *api.Client {
	t.Helper()
	c, err := vaultclient.New(addr, "", 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
