package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// revokedPod is a pod whose vault-init ran with a database credential of
// its own database role (so its users can be counted) and a KV secret.
type revokedPod struct {
	*pod
	role, user, pass, leaseID, vaultToken string
}

// initForRevoke creates database role dbRole (at most 8 characters, so
// Vault's username template keeps it whole) with ttl, runs vault-init
// with extra flags, and checks the credential works.
func initForRevoke(t *testing.T, dbRole string, ttl time.Duration, extra ...string) *revokedPod {
	t.Helper()
	if err := bed.CreateDBRole(dbRole, ttl, ttl); err != nil {
		t.Fatal(err)
	}
	p := &revokedPod{pod: newPod(t), role: dbRole}
	p.mustInit(append([]string{"--secret", "db=database/creds/" + dbRole, "--secret", "kv=secret/data/app"}, extra...)...)
	p.user, p.pass = dbCreds(t, filepath.Join(p.secretsDir, "db"))
	p.vaultToken = p.token()
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	p.leaseID = st.Lookup("db").LeaseID
	ctx := context.Background()
	conn, err := bed.PGConnect(ctx, p.user, p.pass)
	if err != nil {
		t.Fatalf("the credential does not work before vault-revoke: %v", err)
	}
	conn.Close(ctx)
	return p
}

// appReads is a policy that allows reading what initForRevoke reads, and
// nothing else.
const appReads = `
path "database/creds/*" { capabilities = ["read"] }
path "secret/data/app"  { capabilities = ["read"] }
`

// readOnlyRole creates policy from hcl and a kubernetes auth role bound
// to it; with noDefault, its tokens do not get Vault's default policy
// (token_no_default_policy), which allows revoke-self and lookup-self.
func readOnlyRole(t *testing.T, role, policy, hcl string, noDefault bool) {
	t.Helper()
	if err := bed.Root().Sys().PutPolicy(policy, hcl); err != nil {
		t.Fatal(err)
	}
	if err := bed.CreateK8sRole(role, time.Hour, 24*time.Hour, policy); err != nil {
		t.Fatal(err)
	}
	if !noDefault {
		return
	}
	if _, err := bed.Root().Logical().Write("auth/kubernetes/role/"+role, map[string]any{"token_no_default_policy": true}); err != nil {
		t.Fatal(err)
	}
}

func (p *revokedPod) revoke(args ...string) result {
	p.t.Helper()
	return run(p.t, "vault-revoke", append([]string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, args...), p.env...)
}

// assertGone checks everything a user relies on after a successful
// revocation: the database user cannot log in and is dropped, the token
// is dead, the files are gone, and state.json says revoked.
func (p *revokedPod) assertGone(within time.Duration) {
	t := p.t
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	for users := dbUsers(t, p.role); len(users) > 0; users = dbUsers(t, p.role) {
		if time.Now().After(deadline) {
			t.Fatalf("database users %v still exist %s after vault-revoke", users, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn, err := bed.PGConnect(ctx, p.user, p.pass)
	if err == nil {
		conn.Close(ctx)
		t.Error("the database credential still logs in after vault-revoke")
	} else if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "28") {
		t.Errorf("logging in after vault-revoke: want an authentication failure, got %v", err)
	}
	if _, err := bed.Client(p.vaultToken).Auth().Token().LookupSelf(); err == nil {
		t.Error("the token is still alive after vault-revoke")
	}
	if names := dirEntries(t, p.secretsDir); len(names) > 0 {
		t.Errorf("secret files left behind: %v", names)
	}
	if _, err := os.Stat(filepath.Join(p.stateDir, state.TokenName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token file left behind (%v)", err)
	}
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatalf("state.json after vault-revoke: %v", err)
	}
	if st.RevokedAt == nil {
		t.Error("state.json has no revoked_at: a running vault-renew would not know to stop")
	}
}

// TestRevokeEndsThePodsCredentials is vault-revoke's promise: when the pod
// ends, its database user and token die with it, the files go, and a
// second run has nothing to do.
func TestRevokeEndsThePodsCredentials(t *testing.T) {
	t.Parallel()
	p := initForRevoke(t, "revokeok", time.Hour)

	r := p.revoke()
	if r.code != 0 {
		t.Fatalf("vault-revoke exited %d:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, p.leaseID) {
		t.Errorf("the log should name the revoked lease %s:\n%s", p.leaseID, r.stderr)
	}
	// sys/leases/revoke is synchronous: the user is dropped before
	// vault-revoke exits.
	p.assertGone(0)
	assertNoSecret(t, "vault-revoke log", r.stderr)

	again := p.revoke()
	if again.code != 0 || !strings.Contains(again.stderr, "nothing to revoke") {
		t.Errorf("second run: exit %d, want 0 and \"nothing to revoke\":\n%s", again.code, again.stderr)
	}
}

// TestRevokeWithoutLeasePermission: a policy without sys/leases/revoke
// still ends every lease, through revoke-self, and says so once.
func TestRevokeWithoutLeasePermission(t *testing.T) {
	t.Parallel()
	const role = "norevoke"
	readOnlyRole(t, role, "app-norevoke", appReads, false)
	p := initForRevoke(t, "revkself", time.Hour, "--role", role)

	r := p.revoke()
	if r.code != 0 {
		t.Fatalf("vault-revoke exited %d:\n%s", r.code, r.stderr)
	}
	const line = "revoking the token instead"
	if n := strings.Count(r.stderr, line); n != 1 {
		t.Errorf("want one log line saying %q, got %d:\n%s", line, n, r.stderr)
	}
	if strings.Contains(r.stderr, "level=ERROR") {
		t.Errorf("the fallback is logged as an error:\n%s", r.stderr)
	}
	// Revoking a token makes Vault revoke its leases in the background.
	p.assertGone(15 * time.Second)
}

// TestRevokeAfterLeasesExpired: leases that Vault already expired count
// as revoked.
func TestRevokeAfterLeasesExpired(t *testing.T) {
	t.Parallel()
	p := initForRevoke(t, "revkexpd", 2*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for len(dbUsers(t, p.role)) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("Vault did not expire the 2s lease within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := p.revoke()
	if r.code != 0 {
		t.Fatalf("vault-revoke exited %d:\n%s", r.code, r.stderr)
	}
	p.assertGone(0)
}

// TestRevokeVaultUnreachable: with Vault down or partitioned, vault-revoke
// gives up within its timeout plus a second, names Vault and what is left,
// and keeps the token so that a later run can finish the job.
func TestRevokeVaultUnreachable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cut  func(*testbed.Proxy) error
	}{
		{"refused", func(p *testbed.Proxy) error { p.Cut(); return nil }},
		{"blackholed", (*testbed.Proxy).Blackhole},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxy, err := testbed.NewProxy(bed.VaultHostPort)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(proxy.Close)
			vaultAddr := "http://" + proxy.Addr()
			p := initForRevoke(t, []string{"revkdwn1", "revkdwn2"}[i], time.Hour, "--vault-addr", vaultAddr)
			if err := tc.cut(proxy); err != nil {
				t.Fatal(err)
			}

			const timeout = 2 * time.Second
			r := p.revoke("--timeout", timeout.String())
			if r.code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", r.code, r.stderr)
			}
			if r.elapsed > timeout+time.Second {
				t.Errorf("took %s with --timeout %s", r.elapsed.Round(time.Millisecond), timeout)
			}
			for _, s := range []string{vaultAddr, p.leaseID, "TTL"} {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("the error should mention %q:\n%s", s, r.stderr)
				}
			}
			assertNoSecret(t, "vault-revoke log", r.stderr)
			if users := dbUsers(t, p.role); len(users) == 0 {
				t.Error("the database user is gone although Vault was unreachable")
			}

			// Vault is back: running vault-revoke again finishes the job.
			if err := proxy.Restore(); err != nil {
				t.Fatal(err)
			}
			if again := p.revoke(); again.code != 0 {
				t.Fatalf("run after Vault came back: exit %d:\n%s", again.code, again.stderr)
			}
			p.assertGone(0)
		})
	}
}

// TestRevokeRetriesWhatTheDatabaseFailed: when PostgreSQL fails the
// revocation (here a revocation statement that fails while a table
// exists; in the wild a database that is down, or "tuple concurrently
// updated" when Vault drops the same user from two sessions), Vault
// answers 400 "failed to revoke entry" and keeps the lease. vault-revoke
// tries again until its timeout, and succeeds once the database does.
func TestRevokeRetriesWhatTheDatabaseFailed(t *testing.T) {
	t.Parallel()
	// The table lives in a schema of its own: one in public, owned by
	// the superuser, would make every other role's statements on "ALL
	// TABLES IN SCHEMA public" fail (permission denied) while it exists,
	// and so every creation and revocation of the tests running beside
	// this one (Vault then retries an expired lease's revocation only
	// 20 s later).
	const role, schema, block = "revkdbf", "podlease_block", "revkdbf"
	p := initForRevoke(t, role, time.Hour)
	ctx := context.Background()
	su, err := bed.PGSuperuser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema); err != nil {
		t.Fatal(err)
	}
	if _, err := su.Exec(ctx, "CREATE TABLE "+schema+"."+block+" ()"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = su.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	// Vault's database engine splits statements at semicolons, so the
	// condition is one statement: a division by zero while the table is
	// there. Revocation reads the role's statements when it runs.
	if _, err := bed.Root().Logical().Write(testbed.DBMount+"/roles/"+role, map[string]any{
		"db_name": testbed.DBConnection,
		"creation_statements": []string{
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
			`GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";`,
		},
		"revocation_statements": []string{
			`SELECT 1 / (1 - (SELECT count(*) FROM pg_tables WHERE schemaname = '` + schema + `' AND tablename = '` + block + `'))::int;`,
			`REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM "{{name}}";`,
			`DROP ROLE IF EXISTS "{{name}}";`,
		},
		"default_ttl": 3600, "max_ttl": 3600,
	}); err != nil {
		t.Fatal(err)
	}

	done := make(chan result, 1)
	go func() { done <- p.revoke("--timeout", "30s") }()
	time.Sleep(3 * time.Second)
	if users := dbUsers(t, p.role); len(users) != 1 {
		t.Errorf("database users while the database fails the revocation: %v; want the pod's one", users)
	}
	if _, err := su.Exec(ctx, "DROP TABLE "+schema+"."+block); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != 0 {
		t.Fatalf("vault-revoke exited %d once the database revoked again:\n%s", r.code, r.stderr)
	}
	for _, s := range []string{"transient failure, retrying", "failed to revoke entry", "division by zero", "revoked lease"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("the log should say %q:\n%s", s, r.stderr)
		}
	}
	assertNoSecret(t, "vault-revoke log", r.stderr)
	p.assertGone(0)
}

// TestRevokeWhereItsOwnEnvironmentIsWrong: vault-revoke run from a shell
// or a container whose VAULT_* variables differ from the pod's. The
// address and namespace come from state.json, so VAULT_ADDR,
// VAULT_AGENT_ADDR and VAULT_NAMESPACE there change nothing; a
// VAULT_CACERT naming a file that is not there keeps the run from
// building its client, so it revokes nothing and keeps the token file,
// and a run without it finishes the job.
func TestRevokeWhereItsOwnEnvironmentIsWrong(t *testing.T) {
	t.Parallel()
	p := initForRevoke(t, "revkenv", time.Hour)
	elsewhere := []string{"VAULT_ADDR=http://127.0.0.1:1", "VAULT_AGENT_ADDR=http://127.0.0.1:1", "VAULT_NAMESPACE=team-elsewhere"}

	badCA := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir},
		append(append(slices.Clone(p.env), elsewhere...), "VAULT_CACERT="+filepath.Join(t.TempDir(), "not-mounted.pem"))...)
	if badCA.code != 1 || !strings.Contains(badCA.stderr, "VAULT_") || !strings.Contains(badCA.stderr, "running vault-revoke again can finish") {
		t.Errorf("with a missing VAULT_CACERT: exit %d, want 1 naming the VAULT_* settings and saying a second run can finish:\n%s", badCA.code, badCA.stderr)
	}
	if _, err := os.Stat(filepath.Join(p.stateDir, state.TokenName)); err != nil {
		t.Fatalf("the token file is gone after a run that revoked nothing: %v", err)
	}
	if users := dbUsers(t, p.role); len(users) == 0 {
		t.Fatal("the database user is gone, yet the run could not reach Vault")
	}

	r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, append(slices.Clone(p.env), elsewhere...)...)
	if r.code != 0 {
		t.Fatalf("with VAULT_ADDR, VAULT_AGENT_ADDR and VAULT_NAMESPACE elsewhere: exit %d, want 0 (state.json names Vault):\n%s", r.code, r.stderr)
	}
	p.assertGone(0)
	assertNoSecret(t, "vault-revoke log", badCA.stderr+r.stderr)
}

// TestRevokeWithoutRevokeSelf: a token whose policy allows neither
// sys/leases/revoke nor auth/token/revoke-self (an auth role with
// token_no_default_policy) gets a plain "permission denied" from Vault,
// which is no revocation: vault-revoke exits 1 naming what the policy
// lacks and keeps the token file; with the policy fixed, the next run
// revokes.
func TestRevokeWithoutRevokeSelf(t *testing.T) {
	t.Parallel()
	const policy, role = "app-noself", "noself"
	readOnlyRole(t, role, policy, appReads, true)
	p := initForRevoke(t, "revknos", time.Hour, "--role", role)

	r := p.revoke()
	if r.code != 1 || !strings.Contains(r.stderr, "auth/token/revoke-self") || strings.Contains(r.stderr, "already invalid") {
		t.Fatalf("exit %d, want 1 naming auth/token/revoke-self and no claim that the token is dead:\n%s", r.code, r.stderr)
	}
	if users := dbUsers(t, p.role); len(users) == 0 {
		t.Fatal("the database user is gone: then the run should have said so")
	}
	if err := bed.Root().Sys().PutPolicy(policy, appReads+`path "auth/token/revoke-self" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	if again := p.revoke(); again.code != 0 {
		t.Fatalf("with revoke-self allowed: exit %d:\n%s", again.code, again.stderr)
	}
	p.assertGone(15 * time.Second)
}

// TestRevokeRemovesWhatAnEarlierRunCouldNot: a secret file the first run
// could not remove (here a directory in its place, as a read-only mount
// would refuse) is removed by the next run, though Vault has nothing
// left to revoke.
func TestRevokeRemovesWhatAnEarlierRunCouldNot(t *testing.T) {
	t.Parallel()
	p := initForRevoke(t, "revkfile", time.Hour)
	kv := filepath.Join(p.secretsDir, "kv")
	content, err := os.ReadFile(kv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(kv); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(kv, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	r := p.revoke()
	if r.code != 1 || !strings.Contains(r.stderr, "remove secret file") {
		t.Fatalf("exit %d, want 1 naming the file it could not remove:\n%s", r.code, r.stderr)
	}
	if err := os.RemoveAll(kv); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kv, content, 0o440); err != nil {
		t.Fatal(err)
	}
	if again := p.revoke(); again.code != 0 {
		t.Fatalf("second run: exit %d:\n%s", again.code, again.stderr)
	}
	p.assertGone(0)
}
