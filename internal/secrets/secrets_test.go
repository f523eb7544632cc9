package secrets

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// responses are Vault's answers by path: status and body. A path listed
// under flaky fails with 500 the first time.
var responses = map[string]struct {
	status int
	body   string
}{
	"database/creds/app":        {200, `{"lease_id":"database/creds/app/L1","lease_duration":3600,"renewable":true,"data":{"username":"v-app-1","password":"pw-1"}}`},
	"database/static-creds/app": {200, `{"data":{"username":"app","password":"pw-s","ttl":1800,"last_vault_rotation":"2025-01-01T00:00:00Z"}}`},
	"secret/data/app":           {200, `{"data":{"data":{"api_key":"k-1"},"metadata":{"version":3,"created_time":"2025-01-01T00:00:00Z"}}}`},
	"kv/app":                    {200, `{"lease_duration":2764800,"data":{"api_key":"k-v1"}}`},
	"secret/data/deleted":       {404, `{"data":{"data":null,"metadata":{"version":2,"deletion_time":"2025-01-01T00:00:00Z","destroyed":false}}}`},
	"secret/data/missing":       {404, ``},
	// Classified by what Vault returned, not by the path.
	"secret/data/static-creds/x": {200, `{"data":{"data":{"username":"kv-user","password":"kv-pw"},"metadata":{"version":1,"created_time":"2025-01-01T00:00:00Z"}}}`},
	"kv/static-creds/x":          {200, `{"lease_duration":2764800,"data":{"username":"kv1-user","password":"kv1-pw"}}`},
	"dbs/roles-static/app":       {200, `{"data":{"username":"app","password":"pw-s2","ttl":600,"last_vault_rotation":"2025-01-01T00:00:00Z","rotation_period":3600}}`},
	"kv/data/looks-like-kv2":     {200, `{"data":{"data":{"a":"b"},"metadata":"not a map"}}`},
	"database/creds/denied":      {403, `{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`},
	// KV v2's answer to a path without data/, and an answer without data.
	"secret/creds/stripe":                        {404, `{"request_id":"r-2","data":null,"warnings":["` + kv2Warning + `"]}`},
	"kv/null":                                    {200, `{"request_id":"r-1","lease_id":"","data":null,"auth":null}`},
	"kv/with-warning":                            {200, `{"data":{"a":"b"},"warnings":["a deprecated endpoint"]}`},
	"secret/data/creds/x":                        {200, `{"data":{"data":{"api_key":"k-2"},"metadata":{"version":1}}}`},
	"secret/creds/x":                             {404, `{"request_id":"r-2","data":null,"warnings":["` + kv2Warning + `"]}`},
	"other/creds/x":                              {404, `{"request_id":"r-2","data":null,"warnings":["` + kv2Warning + `"]}`},
	"database/creds/gone":                        {404, ``},
	"sys/internal/ui/mounts/secret/creds/x":      {200, `{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}`},
	"sys/internal/ui/mounts/database/creds/gone": {200, `{"data":{"path":"database/","type":"database","options":null}}`},
	"database/creds/flaky":                       {200, `{"lease_id":"database/creds/flaky/L2","lease_duration":60,"renewable":true,"data":{"username":"u","password":"p"}}`},
}

const kv2Warning = "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation."

type fake struct {
	mu    sync.Mutex
	calls map[string]int
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	f.mu.Lock()
	f.calls[path]++
	n := f.calls[path]
	f.mu.Unlock()
	resp, ok := responses[path]
	if !ok {
		w.WriteHeader(404)
		return
	}
	if path == "database/creds/flaky" && n == 1 {
		w.WriteHeader(500)
		io.WriteString(w, `{"errors":["internal error"]}`)
		return
	}
	w.WriteHeader(resp.status)
	io.WriteString(w, resp.body)
}

// newFake starts a fake Vault and returns it with a client for it.
func newFake(t *testing.T) (*fake, *api.Client) {
	t.Helper()
	f := &fake{calls: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := vaultclient.New(srv.URL, "", 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func (f *fake) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[path]
}

func TestRead(t *testing.T) {
	t.Parallel()
	f, c := newFake(t)
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		path       string
		wantKind   string
		wantFields map[string]string
		wantTTL    time.Duration
		wantErr    string
		wantCalls  int
	}{
		{path: "database/creds/app", wantKind: state.KindLeased, wantFields: map[string]string{"username": "v-app-1", "password": "pw-1"}, wantTTL: time.Hour, wantCalls: 1},
		{path: "database/static-creds/app", wantKind: state.KindStatic, wantFields: map[string]string{"username": "app", "password": "pw-s"}, wantTTL: 30 * time.Minute, wantCalls: 1},
		{path: "secret/data/app", wantKind: state.KindKV, wantFields: map[string]string{"api_key": "k-1"}, wantCalls: 1},
		{path: "kv/app", wantKind: state.KindKV, wantFields: map[string]string{"api_key": "k-v1"}, wantCalls: 1},
		{path: "secret/data/static-creds/x", wantKind: state.KindKV, wantFields: map[string]string{"username": "kv-user", "password": "kv-pw"}, wantCalls: 1},
		{path: "kv/static-creds/x", wantKind: state.KindKV, wantFields: map[string]string{"username": "kv1-user", "password": "kv1-pw"}, wantCalls: 1},
		{path: "dbs/roles-static/app", wantKind: state.KindStatic, wantFields: map[string]string{"username": "app", "password": "pw-s2"}, wantTTL: 10 * time.Minute, wantCalls: 1},
		{path: "kv/data/looks-like-kv2", wantKind: state.KindKV, wantFields: map[string]string{"metadata": "not a map"}, wantCalls: 1},
		{path: "database/creds/flaky", wantKind: state.KindLeased, wantFields: map[string]string{"username": "u"}, wantTTL: time.Minute, wantCalls: 2},
		{path: "secret/data/missing", wantErr: "no secret at secret/data/missing: check the path", wantCalls: 1},
		{path: "secret/data/deleted", wantErr: "no secret at secret/data/deleted", wantCalls: 1},
		{path: "database/creds/denied", wantErr: "permission denied reading database/creds/denied", wantCalls: 1},
		{path: "secret/creds/stripe", wantErr: "no secret at secret/creds/stripe (Vault: Invalid path for a versioned K/V secrets engine.", wantCalls: 1},
		{path: "kv/null", wantErr: "no secret at kv/null: check the path", wantCalls: 1},
		{path: "kv/with-warning", wantKind: state.KindKV, wantFields: map[string]string{"a": "b"}, wantCalls: 1},
	} {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := Read(ctx, c, log, tc.path)
			if n := f.count(tc.path); n != tc.wantCalls {
				t.Errorf("%d requests, want %d", n, tc.wantCalls)
			}
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("no error; fields %v", got.Fields)
				}
				if !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Errorf("error %q, want it to start with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.wantKind || got.TTL() != tc.wantTTL {
				t.Errorf("kind %s ttl %v, want %s %v", got.Kind, got.TTL(), tc.wantKind, tc.wantTTL)
			}
			for k, v := range tc.wantFields {
				if got.Fields[k] != v {
					t.Errorf("field %s = %v, want %q (fields %v)", k, got.Fields[k], v, got.Fields)
				}
			}
		})
	}
}

// TestFetch: a credentials-shaped path costs one read when it holds a
// secret, and a mount lookup only when it holds none; on a KV v2 mount it
// is then read with data/.
func TestFetch(t *testing.T) {
	t.Parallel()
	f, c := newFake(t)
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		path, wantPath, wantErr string
		wantLookups             int
	}{
		{path: "database/creds/app", wantPath: "database/creds/app"},
		{path: "secret/creds/x", wantPath: "secret/data/creds/x", wantLookups: 1},
		{path: "other/creds/x", wantErr: "no secret at other/creds/x (Vault: Invalid path for a versioned K/V secrets engine.", wantLookups: 1},
		{path: "database/creds/gone", wantErr: "no secret at database/creds/gone: check the path", wantLookups: 1},
	} {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := Fetch(ctx, c, log, tc.path)
			if n := f.count("sys/internal/ui/mounts/" + tc.path); n != tc.wantLookups {
				t.Errorf("%d mount lookups, want %d", n, tc.wantLookups)
			}
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("no error; read %s, fields %v", got.Path, got.Fields)
				}
				if !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Errorf("error %q, want it to start with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Path != tc.wantPath || len(got.Fields) == 0 {
				t.Errorf("read %s, fields %v; want %s and its fields", got.Path, got.Fields, tc.wantPath)
			}
		})
	}
}

func TestReadErrorHint(t *testing.T) {
	t.Parallel()
	err := &ReadError{Path: "database/creds/app", Err: &api.ResponseError{StatusCode: 403, Errors: []string{"permission denied"}}, Hint: `check the policy bound to role "web"`}
	want := `permission denied reading database/creds/app: check the policy bound to role "web"`
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func fetched(path string, data map[string]any, lease string) *Fetched {
	return classify(path, apiSecret(data, lease), time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC))
}

func apiSecret(data map[string]any, lease string) *api.Secret {
	s := &api.Secret{Data: data, LeaseID: lease}
	if lease != "" {
		s.LeaseDuration = 3600
		s.Renewable = true
	}
	return s
}

func TestRenderAndRecord(t *testing.T) {
	t.Parallel()
	db := fetched("database/creds/app", map[string]any{"username": "u-1", "password": `p"1`}, "database/creds/app/L1")
	kv := fetched("secret/data/app", map[string]any{"data": map[string]any{"api_key": "k-1"}, "metadata": map[string]any{"version": json.Number("1")}}, "")
	lookup := func(path string) (*render.Secret, error) {
		if path == "secret/data/app" {
			return kv.Template(), nil
		}
		return nil, os.ErrNotExist
	}
	for _, tc := range []struct {
		name    string
		sec     state.Secret
		f       *Fetched
		lookup  render.Lookup
		want    string
		wantErr string
	}{
		{name: "env", sec: state.Secret{Name: "db", Path: "database/creds/app", Format: render.Env}, f: db, want: "PASSWORD='p\"1'\nUSERNAME=\"u-1\"\n"},
		{name: "kv v2 renders the inner data", sec: state.Secret{Name: "app", Path: "secret/data/app", Format: render.JSON}, f: kv, want: "{\n  \"api_key\": \"k-1\"\n}\n"},
		{name: "template with its own path", sec: state.Secret{Name: "db", Path: "database/creds/app", TemplateFile: "t", Template: `{{ with secret "database/creds/app" }}{{ .Data.username }}{{ end }}/{{ .Data.password }}`}, f: db, want: `u-1/p"1`},
		{name: "template with another path", sec: state.Secret{Name: "db", Path: "database/creds/app", TemplateFile: "t", Template: `{{ .Data.username }}:{{ with secret "secret/data/app" }}{{ .Data.data.api_key }}{{ end }}`}, f: db, lookup: lookup, want: "u-1:k-1"},
		{name: "template with another path, no lookup", sec: state.Secret{Name: "db", Path: "database/creds/app", TemplateFile: "t", Template: `{{ with secret "secret/data/app" }}{{ end }}`}, f: db, wantErr: `template t for secret "db": `},
		{name: "bad format", sec: state.Secret{Name: "db", Format: "toml"}, f: db, wantErr: `render secret "db" as toml`},
		{name: "bad template", sec: state.Secret{Name: "db", TemplateFile: "t", Template: `{{ .Data.username `}, f: db, wantErr: `template for secret "db"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.sec
			out, err := Render(&s, tc.f, tc.lookup, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to start with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("got %q, want %q", out, tc.want)
			}
			Record(&s, tc.f)
			if !s.IssuedAt.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("issued_at %v", s.IssuedAt)
			}
			if s.Kind != tc.f.Kind || s.LeaseID != tc.f.Resp.LeaseID {
				t.Errorf("recorded kind %q lease %q", s.Kind, s.LeaseID)
			}
			if tc.f.Kind == state.KindLeased && !s.ExpiresAt.Equal(s.IssuedAt.Add(time.Hour)) {
				t.Errorf("expires_at %v, want an hour after %v", s.ExpiresAt, s.IssuedAt)
			}
			if tc.f.Kind == state.KindKV && !s.ExpiresAt.IsZero() {
				t.Errorf("kv data expires at %v, want never", s.ExpiresAt)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := &state.Secret{Name: "db", File: filepath.Join(dir, "db"), FileMode: "0440"}
	if err := WriteFile(s, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(s.File); err != nil || fi.Mode().Perm() != 0o440 {
		t.Errorf("stat: %v, %v; want mode 0440", fi, err)
	}
	bad := &state.Secret{Name: "db", File: filepath.Join(dir, "bad"), FileMode: "rw"}
	if err := WriteFile(bad, []byte("x")); err == nil || !strings.Contains(err.Error(), `secret "db"`) {
		t.Errorf("err = %v, want one naming the secret", err)
	}
	if _, err := os.Stat(bad.File); !os.IsNotExist(err) {
		t.Error("a file was written with a bad mode")
	}
}
