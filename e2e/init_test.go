package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// TestInitDatabaseCredential is the core promise: the pod's own database
// user, which can read but not write, and a live token beside it.
func TestInitDatabaseCredential(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	r := p.mustInit("--secret", "db=database/creds/app", "--log-level", "debug")

	dbFile := filepath.Join(p.secretsDir, "db")
	user, pass := dbCreds(t, dbFile)
	if !strings.HasPrefix(user, "v-") {
		t.Errorf("username %q does not look like a Vault-generated user", user)
	}
	ctx := context.Background()
	conn, err := bed.PGConnect(ctx, user, pass)
	if err != nil {
		t.Fatalf("log in to PostgreSQL with the written credential: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil || n == 0 {
		t.Errorf("SELECT from items: n=%d err=%v", n, err)
	}
	_, err = conn.Exec(ctx, "INSERT INTO items VALUES (99, 'nope')")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("INSERT: want permission denied (42501), got %v", err)
	}

	for path, want := range map[string]os.FileMode{
		dbFile:                                  0o440,
		filepath.Join(p.stateDir, "token"):      0o600,
		filepath.Join(p.stateDir, "state.json"): 0o600,
	} {
		if got := mode(t, path); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}

	lookup, err := bed.Client(p.token()).Auth().Token().LookupSelf()
	if err != nil {
		t.Fatalf("the token file holds no live token: %v", err)
	}
	policies, _ := lookup.TokenPolicies()
	if !slices.Contains(policies, testbed.Policy) {
		t.Errorf("token policies %v lack %q", policies, testbed.Policy)
	}

	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	accessor, _ := lookup.TokenAccessor()
	if st.Token.Accessor != accessor || st.Auth.Method != "kubernetes" || st.Auth.Role != testbed.Role {
		t.Errorf("state token/auth = %+v / %+v, want accessor %s, kubernetes role %s", st.Token, st.Auth, accessor, testbed.Role)
	}
	sec := st.Lookup("db")
	if sec == nil || sec.Kind != state.KindLeased || !strings.HasPrefix(sec.LeaseID, "database/creds/app/") || !sec.Renewable || sec.LeaseDuration != 3600 {
		t.Errorf("state secret db = %+v, want a renewable 1h lease of database/creds/app", sec)
	}
	if !strings.Contains(r.stderr, sec.LeaseID) {
		t.Errorf("the log should name the lease id %s", sec.LeaseID)
	}
	assertNoSecret(t, "vault-init debug log", r.stderr)
}

// TestInitFormatsAndTemplate renders env, yaml, KV v2 json and a
// consul-template style template in one run.
func TestInitFormatsAndTemplate(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	tmpl := filepath.Join(p.dir, "dsn.tmpl")
	const text = `postgres://{{ .Data.username }}:{{ .Data.password }}@` + "{{ `db` }}" + `/app
{{ with secret "secret/data/app" }}api_key={{ .Data.data.api_key }}{{ end }}
`
	if err := os.WriteFile(tmpl, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	noteSecret(bed.KVAPIKey)
	p.mustInit(
		"--secret", "dsn=database/creds/app", "--template", "dsn="+tmpl,
		"--secret", "kv=secret/data/app",
		"--secret", "static=database/static-creds/app-static", "--format", "static=env",
		"--file-mode", "0400",
	)

	var kv map[string]string
	if err := json.Unmarshal([]byte(testbed.ReadFile(t, filepath.Join(p.secretsDir, "kv"))), &kv); err != nil {
		t.Fatal(err)
	}
	if kv["api_key"] != bed.KVAPIKey || kv["endpoint"] != testbed.KVEndpoint || len(kv) != 2 {
		t.Errorf("KV v2 json should be the inner data {api_key, endpoint}, got keys %v", keys(kv))
	}

	dsn := testbed.ReadFile(t, filepath.Join(p.secretsDir, "dsn"))
	lines := strings.Split(dsn, "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "postgres://v-") || lines[1] != "api_key="+bed.KVAPIKey {
		t.Errorf("template output has the wrong shape (%d lines)", len(lines))
	}
	userpass := strings.TrimSuffix(strings.TrimPrefix(lines[0], "postgres://"), "@db/app")
	user, pass, _ := strings.Cut(userpass, ":")
	noteSecret(pass)
	ctx := context.Background()
	if conn, err := bed.PGConnect(ctx, user, pass); err != nil {
		t.Errorf("templated credential does not log in: %v", err)
	} else {
		conn.Close(ctx)
	}

	env := testbed.ReadFile(t, filepath.Join(p.secretsDir, "static"))
	vars := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(env), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok || !strings.HasPrefix(v, `"`) || !strings.HasSuffix(v, `"`) {
			t.Fatalf("env line %q is not KEY=\"value\"", k)
		}
		vars[k] = strings.Trim(v, `"`)
	}
	noteSecret(vars["PASSWORD"])
	if vars["USERNAME"] != "static_app" || vars["PASSWORD"] == "" {
		t.Errorf("static creds env: USERNAME=%q, PASSWORD set=%v", vars["USERNAME"], vars["PASSWORD"] != "")
	}
	if conn, err := bed.PGConnect(ctx, vars["USERNAME"], vars["PASSWORD"]); err != nil {
		t.Errorf("static credential does not log in: %v", err)
	} else {
		conn.Close(ctx)
	}
	for _, name := range []string{"dsn", "kv", "static"} {
		if got := mode(t, filepath.Join(p.secretsDir, name)); got != 0o400 {
			t.Errorf("%s: mode %o, want 0400 (--file-mode)", name, got)
		}
	}
}

func TestInitYAML(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.mustInit("--secret", "kv=secret/data/app", "--format", "kv=yaml")
	got := testbed.ReadFile(t, filepath.Join(p.secretsDir, "kv"))
	want := "api_key: \"" + bed.KVAPIKey + "\"\nendpoint: \"" + testbed.KVEndpoint + "\"\n"
	if got != want {
		t.Errorf("yaml output differs from the expected two quoted lines")
	}
}

// TestInitOtherAuthMethods logs in with jwt and approle.
func TestInitOtherAuthMethods(t *testing.T) {
	t.Parallel()
	t.Run("jwt", func(t *testing.T) {
		t.Parallel()
		p := newPod(t)
		p.mustInit("--auth-method", "jwt", "--secret", "db=database/creds/app")
		st, err := state.Load(p.stateDir)
		if err != nil || st.Auth.Method != "jwt" || st.Auth.Mount != "jwt" {
			t.Fatalf("state auth: %+v, %v", st, err)
		}
		user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
		ctx := context.Background()
		conn, err := bed.PGConnect(ctx, user, pass)
		if err != nil {
			t.Fatalf("jwt-issued credential does not log in: %v", err)
		}
		conn.Close(ctx)
	})
	t.Run("approle", func(t *testing.T) {
		t.Parallel()
		p := newPod(t)
		roleID, secretID, err := bed.AppRoleCreds(p.dir)
		if err != nil {
			t.Fatal(err)
		}
		noteSecret(testbed.ReadFile(t, secretID))
		r := run(t, "vault-init", []string{"--auth-method", "approle", "--role-id-file", roleID, "--secret-id-file", secretID,
			"--secret", "kv=secret/data/app", "--secrets-dir", p.secretsDir, "--state-dir", p.stateDir}, p.env...)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		noteSecret(p.token())
	})
}

// TestInitEnvironmentConfig configures vault-init entirely through
// PODLEASE_* variables, as a manifest's env: block would.
func TestInitEnvironmentConfig(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	r := run(t, "vault-init", nil, append(p.env,
		"PODLEASE_ROLE="+testbed.Role,
		"PODLEASE_JWT_FILE="+p.jwtFile,
		"PODLEASE_SECRET=db=database/creds/app,kv=secret/data/app",
		"PODLEASE_FORMAT=kv=env",
		"PODLEASE_SECRETS_DIR="+p.secretsDir,
		"PODLEASE_STATE_DIR="+p.stateDir,
		"PODLEASE_LOG_FORMAT=json",
	)...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	noteSecret(p.token())
	dbCreds(t, filepath.Join(p.secretsDir, "db"))
	if !strings.HasPrefix(testbed.ReadFile(t, filepath.Join(p.secretsDir, "kv")), "API_KEY=\"") {
		t.Errorf("PODLEASE_FORMAT=kv=env was not applied")
	}
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("PODLEASE_LOG_FORMAT=json: log line is not JSON: %q", l)
		}
	}
}

// TestInitRefusesBadInput: every failure exits with the right code and a
// message naming what to fix, fast when it cannot succeed, and leaves
// nothing behind.
func TestInitRefusesBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		args     func(p *pod) []string
		code     int
		mentions []string
		within   time.Duration
	}{
		{
			name: "unknown role",
			args: func(p *pod) []string {
				return append(p.initArgs("--secret", "db=database/creds/app"), "--role", "nosuchrole")
			},
			code: 1, mentions: []string{"nosuchrole", "auth/kubernetes"}, within: 10 * time.Second,
		},
		{
			name: "forbidden path",
			args: func(p *pod) []string {
				return p.initArgs("--secret", "db=database/creds/app", "--secret", "x="+testbed.ForbiddenKVPath)
			},
			code: 1, mentions: []string{"permission denied reading " + testbed.ForbiddenKVPath, "check the policy bound to role"}, within: 10 * time.Second,
		},
		{
			name: "missing jwt file",
			args: func(p *pod) []string {
				return append(p.initArgs("--secret", "db=database/creds/app"), "--jwt-file", p.dir+"/nope")
			},
			code: 1, mentions: []string{"--jwt-file", "/nope"}, within: 10 * time.Second,
		},
		{
			name: "garbage jwt file",
			args: func(p *pod) []string {
				f := filepath.Join(p.dir, "garbage")
				if err := os.WriteFile(f, []byte("not-a-token\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return append(p.initArgs("--secret", "db=database/creds/app"), "--jwt-file", f)
			},
			code: 1, mentions: []string{"--jwt-file", "garbage", "does not hold a JWT"}, within: 10 * time.Second,
		},
		{
			name: "malformed secret",
			args: func(p *pod) []string { return p.initArgs("--secret", "database/creds/app") },
			code: 2, mentions: []string{`--secret "database/creds/app"`, "NAME=PATH", "--help"},
		},
		{
			name: "bad format",
			args: func(p *pod) []string { return p.initArgs("--secret", "db=database/creds/app", "--format", "db=toml") },
			code: 2, mentions: []string{`--format "db=toml"`, "json, env or yaml"},
		},
		{
			name: "unknown flag",
			args: func(p *pod) []string { return p.initArgs("--secret", "db=database/creds/app", "--frobnicate") },
			code: 2, mentions: []string{"unknown flag: --frobnicate", "--help"},
		},
		{
			name: "unreachable vault",
			args: func(p *pod) []string {
				return append(p.initArgs("--secret", "db=database/creds/app"), "--vault-addr", "http://127.0.0.1:1", "--timeout", "3s")
			},
			code: 1, mentions: []string{"http://127.0.0.1:1", "timed out", "connection refused"}, within: 4 * time.Second,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPod(t)
			r := run(t, "vault-init", tc.args(p), p.env...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("stderr should mention %q:\n%s", m, r.stderr)
				}
			}
			if tc.within > 0 && r.elapsed > tc.within {
				t.Errorf("took %s, want at most %s", r.elapsed, tc.within)
			}
			if names := append(dirEntries(t, p.secretsDir), dirEntries(t, p.stateDir)...); len(names) > 0 && !(len(names) == 1 && names[0] == ".lock") {
				t.Errorf("files left behind after a failure: %v", names)
			}
		})
	}
}

// TestInitFailureRevokesWhatItGot: when a later secret fails, the token
// (and with it the lease of the earlier secret) is revoked, so a failed
// start leaves no live database user.
func TestInitFailureRevokesWhatItGot(t *testing.T) {
	t.Parallel()
	const role = "failrevk" // 8 chars: Vault's username template keeps them whole
	if err := bed.CreateDBRole(role, time.Hour, time.Hour); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+role, "--secret", "x="+testbed.ForbiddenKVPath), p.env...)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	if !strings.Contains(r.stderr, "lease_id=database/creds/"+role+"/") || !strings.Contains(r.stderr, "revoked the token") {
		t.Fatalf("the log should show the first lease and its revocation:\n%s", r.stderr)
	}
	deadline := time.Now().Add(15 * time.Second)
	for users := dbUsers(t, role); len(users) > 0; users = dbUsers(t, role) {
		if time.Now().After(deadline) {
			t.Fatalf("database users of the failed start still exist: %v", users)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dbUsers lists the PostgreSQL users Vault created for a database role.
func dbUsers(t *testing.T, role string) []string {
	t.Helper()
	var users []string
	for _, u := range dbUsersOf(t, role) {
		users = append(users, u.name)
	}
	return users
}

// dbUser is a PostgreSQL user Vault created.
type dbUser struct {
	name       string
	validUntil time.Time // its password's end; zero: none
}

// dbUsersOf lists the PostgreSQL users Vault created for a database role,
// with when their passwords end.
func dbUsersOf(t *testing.T, role string) []dbUser {
	t.Helper()
	var users []dbUser
	asSuperuser(t, func(ctx context.Context, conn *pgx.Conn) {
		rows, err := conn.Query(ctx, "SELECT rolname, rolvaliduntil FROM pg_roles WHERE rolname LIKE $1", "v-%-"+role+"-%")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var u dbUser
			var until *time.Time
			if err := rows.Scan(&u.name, &until); err != nil {
				t.Fatal(err)
			}
			if until != nil {
				u.validUntil = *until
			}
			users = append(users, u)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	})
	return users
}

// dropDBUser drops a PostgreSQL user that no lease names.
func dropDBUser(t *testing.T, name string) {
	t.Helper()
	asSuperuser(t, func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, `DROP ROLE IF EXISTS "`+strings.ReplaceAll(name, `"`, `""`)+`"`); err != nil {
			t.Errorf("drop database user %s: %v", name, err)
		}
	})
}

// dbRoleExists reports whether PostgreSQL still has the role.
func dbRoleExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	asSuperuser(t, func(ctx context.Context, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
	})
	return n > 0
}

// asSuperuser runs f on a connection of its own as PostgreSQL's superuser,
// with 10 s to finish.
func asSuperuser(t *testing.T, f func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bed.PGSuperuser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	f(ctx, conn)
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestInitKVUnderStaticCredsPath: a KV v2 secret whose path contains
// /static-creds/ is KV data (what Vault returned says so), and its file
// holds the fields, not the {data, metadata} envelope.
func TestInitKVUnderStaticCredsPath(t *testing.T) {
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

// TestInitKVUnderCredsFolderShortPath: a KV v2 secret in a folder named
// creds, given without data/, is read from its data/ path and its file
// holds its fields. KV v2 answers the short path with a 404 that Vault's
// client returns as an empty secret: it must never become a "{}" file.
func TestInitKVUnderCredsFolderShortPath(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	key := "sk-" + randomDigits(t, 16)
	noteSecret(key)
	writeKV(t, "secret/data/creds/stripe", map[string]any{"api_key": key})
	r := p.initAsRoot("--secret", "stripe=secret/creds/stripe")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0: the mount is KV v2, which the root token may look up:\n%s", r.code, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(testbed.ReadFile(t, filepath.Join(p.secretsDir, "stripe"))), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["api_key"] != key {
		t.Errorf("the file holds fields %v, want only \"api_key\" with the value written", keys(got))
	}
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Lookup("stripe"); s == nil || s.VaultPath() != "secret/data/creds/stripe" {
		t.Errorf("state secret %+v: want vault-renew to read secret/data/creds/stripe", s)
	}
}

// TestInitEnvMultilineWarns: an env-format secret with a PEM value is
// written (a dotenv reader gets it back) with a warning that names the
// field, and no value, since a shell would see \n instead.
func TestInitEnvMultilineWarns(t *testing.T) {
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

// TestInitEnvRefusesDangerousField: a field that upper-cases to
// LD_PRELOAD (or PATH, BASH_ENV, ...) is refused in the env format: exit
// 1 naming the field, nothing written, the token and its leases revoked.
func TestInitEnvRefusesDangerousField(t *testing.T) {
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

// TestInitAuthMountTypo: a login at a mount where no auth method is
// says so (Vault answers 403 there, as for refused bindings), on one line.
// A real refusal (a service account the role does not bind) still points
// at the role's bindings.
func TestInitAuthMountTypo(t *testing.T) {
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

// TestInitTokenReviewUnreachable: Vault that cannot call the TokenReview
// API answers the login with a bare 403, as for a deleted pod. vault-init
// tries once and exits 1 (no retry until --timeout: it cannot tell the two
// apart) with a hint that names both causes and where Vault says which,
// and leaves nothing behind.
func TestInitTokenReviewUnreachable(t *testing.T) {
	t.Parallel()
	const mount = "kubernetes-unreachable"
	ctx := context.Background()
	root := bed.Root()
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := root.Sys().DisableAuthWithContext(context.Background(), mount); err != nil {
			t.Errorf("disable auth/%s: %v", mount, err)
		}
	})
	for path, data := range map[string]map[string]any{
		// Port 1 on loopback: the connection is refused.
		"auth/" + mount + "/config": {"kubernetes_host": "https://127.0.0.1:1", "disable_local_ca_jwt": true},
		"auth/" + mount + "/role/" + testbed.Role: {
			"bound_service_account_names":      []string{testbed.ServiceAccount},
			"bound_service_account_namespaces": []string{testbed.Namespace},
			"audience":                         testbed.Audience,
			"token_policies":                   []string{testbed.Policy},
		},
	} {
		if _, err := root.Logical().WriteWithContext(ctx, path, data); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
	}
	p := newPod(t)
	r := run(t, "vault-init", p.initArgs("--auth-mount", mount, "--secret", "db=database/creds/app", "--timeout", "60s"), p.env...)
	if r.code != 1 || strings.Contains(r.stderr, "retrying") {
		t.Errorf("exit %d, want 1 after one try:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"permission denied (HTTP 403)", "the TokenReview API refused the token", "Vault could not call that API", "login unauthorized"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	assertNothingLeft(t, p)
}

// TestInitInterrupted: SIGTERM while vault-init waits for Vault
// says "interrupted", not that Vault kept failing with "context
// canceled", and leaves nothing behind.
func TestInitInterrupted(t *testing.T) {
	t.Parallel()
	fp := newFaultProxy(t)
	if err := fp.Set(testbed.Rule{Fault: testbed.Hang}); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	s := start(t, "vault-init", p.initArgs("--secret", "db=database/creds/app", "--vault-addr", fp.URL()), p.env...)
	waitUntil(t, 30*time.Second, "vault-init's login to reach Vault and hang", func() bool { return fp.Hits()[testbed.Hang] > 0 })
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

// TestInitWithATokenThatNeverExpires: a given token with no TTL (a root
// token) is not a token that "expires before this lease".
func TestInitWithATokenThatNeverExpires(t *testing.T) {
	t.Parallel()
	s, err := bed.Root().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"root"}})
	if err != nil {
		t.Fatal(err)
	}
	tok := s.Auth.ClientToken
	noteSecret(tok)
	t.Cleanup(func() { _ = bed.Root().Auth().Token().RevokeTree(tok) })
	if s.Auth.LeaseDuration != 0 {
		t.Fatalf("the token has a TTL of %ds; want none", s.Auth.LeaseDuration)
	}
	p := newPod(t)
	file := filepath.Join(p.dir, "token")
	if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, "vault-init", []string{"--auth-method", "token", "--token-file", file, "--secrets-dir", p.secretsDir, "--state-dir", p.stateDir,
		"--secret", "db=database/creds/" + testbed.DBRole}, p.env...)
	if r.code != 0 || strings.Contains(r.stderr, "expires before this lease") {
		t.Errorf("exit %d; want 0 and no warning that the token expires first:\n%s", r.code, r.stderr)
	}
	if rr := p.revoke(); rr.code != 0 {
		t.Errorf("vault-revoke exit %d:\n%s", rr.code, rr.stderr)
	}
}
