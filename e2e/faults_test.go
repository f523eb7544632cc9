package e2e

// Fault injection: a FaultProxy between the binaries and Vault refuses
// connections, resets them, loses answers, goes silent, answers 500 and
// 429, or slows every request down; the binaries must retry within their
// timeout, fail clearly and in bounded time, write nothing partial, and
// recover by themselves when the fault clears.

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// faultCase is one fault and what the binaries should say about it.
type faultCase struct {
	rule  testbed.Rule
	cause string // what the error message must name
}

// vaultFaults are the faults every binary faces.
var vaultFaults = []faultCase{
	{testbed.Rule{Fault: testbed.Refuse}, "connection refused"},
	{testbed.Rule{Fault: testbed.Reset}, "connection reset"},
	{testbed.Rule{Fault: testbed.Drop}, "connection reset"},
	{testbed.Rule{Fault: testbed.Silent}, "timed out"},
	{testbed.Rule{Fault: testbed.Hang}, "timed out"},
	{testbed.Rule{Fault: testbed.Status500}, "HTTP 500"},
	{testbed.Rule{Fault: testbed.Status429}, "HTTP 429"},
	{testbed.Rule{Fault: testbed.Slow, Delay: 2 * time.Second}, "timed out"},
	{testbed.Rule{Fault: testbed.RedirectTwice}, "had already been redirected"},
}

// newFaultProxy starts a fault proxy in front of the bed's Vault, closed
// when the test ends.
func newFaultProxy(t *testing.T) *testbed.FaultProxy {
	t.Helper()
	fp, err := testbed.NewFaultProxy(bed.VaultHostPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.Close)
	return fp
}

// TestFaultsInitOutage: while Vault keeps failing, vault-init retries
// until --timeout, then exits 1 within a bounded time with a message that
// names Vault and the cause, and leaves both directories empty.
func TestFaultsInitOutage(t *testing.T) {
	t.Parallel()
	const timeout = 4 * time.Second
	// Retries stop at the deadline; revoking a token obtained before the
	// fault may take up to 5s more; 1s is for a loaded machine.
	const bound = timeout + 5*time.Second + time.Second
	type outage struct {
		where string // "all": every request; "read": only the secret's
		faultCase
	}
	var cases []outage
	for _, where := range []string{"all", "read"} {
		for _, fc := range vaultFaults {
			// Refuse acts on connections, not paths; a slow read alone
			// fits in the timeout.
			if where == "read" && (fc.rule.Fault == testbed.Refuse || fc.rule.Fault == testbed.Slow) {
				continue
			}
			cases = append(cases, outage{where, fc})
		}
	}
	var clean atomic.Int32
	var worst maxDuration
	concurrently(t, cases, func(c outage) string { return c.where + "-" + c.rule.Fault.String() }, func(t *testing.T, c outage) {
		fp := newFaultProxy(t)
		rule := c.rule
		if c.where == "read" {
			// Login works, reading the secret fails: the token obtained
			// must be revoked.
			rule.PathPrefix = "/v1/database/creds/"
		}
		// 30s: far longer than the timeout.
		if err := fp.SetFor(rule, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		p := newPod(t)
		r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/app",
			"--vault-addr", fp.URL(), "--timeout", timeout.String()), p.env...)
		worst.observe(r.elapsed - timeout)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
		}
		want := []string{fp.URL(), "timed out after", c.cause}
		if c.where == "read" {
			want = append(want, "read database/creds/app", "revoked the token")
		}
		if m := mentionsAll(r.stderr, want...); len(m) > 0 {
			t.Errorf("stderr lacks %q:\n%s", m, r.stderr)
		}
		if r.elapsed > bound {
			t.Errorf("took %s with --timeout %s, want at most %s", r.elapsed.Round(time.Millisecond), timeout, bound)
		}
		assertNothingLeft(t, p)
		if !t.Failed() {
			clean.Add(1)
		}
	})
	figure(t, "faults", "vault-init under a persistent Vault fault (--timeout %s; %d faults on every request, %d on the secret read only): %d/%d failed cleanly (exit 1, Vault and cause named, nothing written, token revoked); worst exit %s after the timeout",
		timeout, len(vaultFaults), len(cases)-len(vaultFaults), clean.Load(), len(cases), worst.get().Round(10*time.Millisecond))
}

// TestFaultsInitRecovers: a fault that clears within --timeout costs
// vault-init some retries but not the pod's start.
func TestFaultsInitRecovers(t *testing.T) {
	t.Parallel()
	const outage = 2 * time.Second
	var ok atomic.Int32
	var mu sync.Mutex
	took := map[string]time.Duration{}
	concurrently(t, vaultFaults, func(fc faultCase) string { return fc.rule.Fault.String() }, func(t *testing.T, fc faultCase) {
		fp := newFaultProxy(t)
		if fc.rule.Fault == testbed.Slow {
			// Slow stays: vault-init must finish despite it.
			if err := fp.Set(fc.rule); err != nil {
				t.Fatal(err)
			}
		} else if err := fp.SetFor(fc.rule, outage); err != nil {
			t.Fatal(err)
		}
		p := newPod(t)
		r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/app", "--secret", "kv=secret/data/app",
			"--vault-addr", fp.URL(), "--timeout", "30s"), p.env...)
		mu.Lock()
		took[fc.rule.Fault.String()] = r.elapsed.Round(10 * time.Millisecond)
		mu.Unlock()
		if r.code != 0 {
			t.Fatalf("exit %d, want 0 once the fault cleared; stderr:\n%s", r.code, r.stderr)
		}
		noteSecret(p.token())
		if fc.rule.Fault != testbed.Slow && !strings.Contains(r.stderr, "retrying") && fc.rule.Fault != testbed.Silent {
			t.Errorf("the log should show the retries:\n%s", r.stderr)
		}
		assertCompleteSet(t, p)
		user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
		if err := pgLogin(user, pass); err != nil {
			t.Errorf("the credential written after the outage does not log in: %v", err)
		}
		if hits := fp.Hits()[fc.rule.Fault]; hits == 0 && fc.rule.Fault != testbed.Refuse {
			t.Errorf("the fault hit no request: the test proves nothing")
		}
		if fc.rule.Fault == testbed.Refuse && !strings.Contains(r.stderr, "connection refused") {
			t.Errorf("the log should show the refused connections:\n%s", r.stderr)
		}
		if !t.Failed() {
			ok.Add(1)
		}
	})
	figure(t, "faults", "vault-init with a fault that clears after %s (slow: 2s per request throughout; hang: the request caught waits out the 15s per-request timeout): %d/%d started the pod; time to start per fault %v",
		outage, ok.Load(), len(vaultFaults), took)
}

// TestFaultsInitLostAnswers: when Vault issues a credential but the answer
// is lost on the way, vault-init's retry gets a second one. The lost ones
// belong to the pod's token, so vault-revoke takes them down with it: no
// database user outlives the pod.
func TestFaultsInitLostAnswers(t *testing.T) {
	t.Parallel()
	const role = "fltdrop"
	if err := bed.CreateDBRole(role, time.Hour, time.Hour); err != nil {
		t.Fatal(err)
	}
	prefix := "database/creds/" + role + "/"
	t.Cleanup(func() { revokePrefix(t, prefix) })
	fp := newFaultProxy(t)
	if err := fp.SetFor(testbed.Rule{Fault: testbed.Drop, PathPrefix: "/v1/" + prefix[:len(prefix)-1]}, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+role, "--vault-addr", fp.URL()), p.env...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	noteSecret(p.token())
	st := assertCompleteSet(t, p)
	dropped := fp.Hits()[testbed.Drop]
	leases := leasesUnder(t, prefix)
	if len(leases) != dropped+1 {
		t.Errorf("%d leases under %s, want %d (one per lost answer, plus the one in use)", len(leases), prefix, dropped+1)
	}
	if id := st.Lookup("db").LeaseID; !slices.Contains(leases, id) {
		t.Errorf("the lease in state.json (%s) is not live in Vault", id)
	}
	rv := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--log-level", "debug"}, p.env...)
	if rv.code != 0 {
		t.Fatalf("vault-revoke exit %d: %s", rv.code, rv.stderr)
	}
	left := leasesLeft(t, prefix, 10*time.Second)
	if len(left) > 0 {
		t.Errorf("leases of lost answers outlive the pod: %v", left)
	}
	if len(dbUsers(t, role)) > 0 {
		t.Errorf("database users outlive the pod")
	}
	figure(t, "faults", "lost answers: %d credentials issued by Vault but lost on the way made %d extra leases under the pod's token; vault-revoke left %d",
		dropped, len(leases)-1, len(left))
}

// podBehindFaultProxy starts a pod whose Vault traffic, vault-init's and
// everything after it (state.json's vault_addr), goes through a fault
// proxy, with a credential from its own database role (leases of ttl,
// max TTL one hour); the role's leases are revoked when the test ends.
// It returns the pod, the proxy, and the prefix of the role's lease ids.
func podBehindFaultProxy(t *testing.T, role string, ttl time.Duration) (p *pod, fp *testbed.FaultProxy, prefix string) {
	t.Helper()
	if err := bed.CreateDBRole(role, ttl, time.Hour); err != nil {
		t.Fatal(err)
	}
	prefix = "database/creds/" + role + "/"
	t.Cleanup(func() { revokePrefix(t, prefix) })
	fp = newFaultProxy(t)
	p = newPod(t)
	p.mustInit("--secret", "db=database/creds/"+role, "--vault-addr", fp.URL())
	return p, fp, prefix
}

// TestFaultsRevoke: vault-revoke against a failing Vault stays within its
// --timeout, says what it could not revoke, keeps the token file so that a
// later run can finish, and a run after the fault clears does finish.
func TestFaultsRevoke(t *testing.T) {
	t.Parallel()
	const timeout = 3 * time.Second
	const bound = timeout + 2*time.Second
	var ok atomic.Int32
	var worst maxDuration
	concurrently(t, vaultFaults, func(fc faultCase) string { return fc.rule.Fault.String() }, func(t *testing.T, fc faultCase) {
		p, fp, prefix := podBehindFaultProxy(t, "frv"+fc.rule.Fault.String(), time.Hour)
		user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
		if err := fp.Set(fc.rule); err != nil {
			t.Fatal(err)
		}
		r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--timeout", timeout.String()}, p.env...)
		worst.observe(r.elapsed)
		if r.elapsed > bound {
			t.Errorf("took %s with --timeout %s, want at most %s", r.elapsed.Round(time.Millisecond), timeout, bound)
		}
		if r.code != 1 {
			t.Fatalf("exit %d, want 1 (nothing could be revoked); stderr:\n%s", r.code, r.stderr)
		}
		if m := mentionsAll(r.stderr, fp.URL(), fc.cause, "not revoked"); len(m) > 0 {
			t.Errorf("stderr lacks %q:\n%s", m, r.stderr)
		}
		// Slow lets the first revocation through; Drop loses Vault's
		// answer to it: the lease is gone though vault-revoke cannot
		// know.
		if fc.rule.Fault != testbed.Slow && fc.rule.Fault != testbed.Drop {
			if err := pgLogin(user, pass); err != nil {
				t.Errorf("revocation failed, yet the credential stopped working: %v", err)
			}
		}
		st, err := state.Load(p.stateDir)
		if err != nil || st.RevokedAt == nil {
			t.Errorf("state after a failed revocation: want it marked revoked, got %v", err)
		}
		if err := fp.Clear(); err != nil {
			t.Fatal(err)
		}
		r = run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--timeout", "10s"}, p.env...)
		if r.code != 0 {
			t.Fatalf("second vault-revoke after the fault cleared: exit %d:\n%s", r.code, r.stderr)
		}
		if left := leasesLeft(t, prefix, 10*time.Second); len(left) > 0 {
			t.Errorf("leases left after the second vault-revoke: %v", left)
		}
		if !t.Failed() {
			ok.Add(1)
		}
	})
	figure(t, "faults", "vault-revoke under a persistent Vault fault (--timeout %s): %d/%d bounded (slowest %s), named what was left, and finished on a rerun after the fault cleared",
		timeout, ok.Load(), len(vaultFaults), worst.get().Round(10*time.Millisecond))
}

// TestFaultsRenew: an outage shorter than the lease's remaining TTL costs
// vault-renew retries, not the credential: after it, the pod still holds
// the same lease (nothing lost, nothing issued twice), renewed by itself.
// An outage longer than the TTL loses the credential; vault-renew then
// issues a new one by itself once Vault is back.
func TestFaultsRenew(t *testing.T) {
	t.Parallel()
	const ttl = 20 * time.Second
	type renewCase struct {
		faultCase
		start, length time.Duration // of the outage, after vault-init
		lost          bool          // longer than the TTL
	}
	var cases []renewCase
	for _, fc := range vaultFaults {
		// The first renewal is due 14.37-14.56s after issue (0.7185-0.728 of
		// the TTL): the outage covers it and ends 4.5s before expiry,
		// time for a retry and a slow answer on a loaded machine (with
		// 2s left, a renewal Vault took over a second to answer cost the
		// lease).
		cases = append(cases, renewCase{faultCase: fc, start: 10500 * time.Millisecond, length: 5 * time.Second})
	}
	cases = append(cases, renewCase{faultCase: faultCase{rule: testbed.Rule{Fault: testbed.Refuse}}, start: 3 * time.Second, length: ttl + 2*time.Second, lost: true})
	var kept, healed atomic.Int32
	var mu sync.Mutex
	var healedAfter time.Duration
	concurrently(t, cases, func(c renewCase) string {
		if c.lost {
			return c.rule.Fault.String() + "-longer-than-ttl"
		}
		return c.rule.Fault.String()
	}, func(t *testing.T, c renewCase) {
		role := "frn" + c.rule.Fault.String()
		if c.lost {
			role = "frnlost"
		}
		p, fp, prefix := podBehindFaultProxy(t, role, ttl)
		t0 := time.Now()
		st0, err := state.Load(p.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		lease0 := st0.Lookup("db").LeaseID
		s := start(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--log-level", "debug"}, p.env...)
		time.Sleep(time.Until(t0.Add(c.start)))
		if err := fp.SetFor(c.rule, c.length); err != nil {
			t.Fatal(err)
		}
		// Past the outage and past the first lease's end; after a lost
		// credential, until vault-renew has a live one again (its retries
		// are then at most 3s apart).
		time.Sleep(time.Until(t0.Add(max(c.start+c.length, ttl) + 4*time.Second)))
		var sec *state.Secret
		for {
			st, err := state.Load(p.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			sec = st.Lookup("db")
			if _, err := leaseTTL(sec.LeaseID); !c.lost || err == nil || time.Since(t0) > c.start+c.length+15*time.Second {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if c.lost {
			mu.Lock()
			healedAfter = time.Since(t0) - c.start - c.length
			mu.Unlock()
		}
		user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
		if err := pgLogin(user, pass); err != nil {
			t.Errorf("the credential in the file does not log in after the outage: %v", err)
		}
		if _, err := leaseTTL(sec.LeaseID); err != nil {
			t.Errorf("the lease in state.json is not live after the outage: %v", err)
		}
		live := leasesUnder(t, prefix)
		log := s.stderr.String()
		if c.lost {
			if sec.LeaseID == lease0 {
				t.Errorf("the lease outlived an outage longer than its TTL?")
			}
			if len(live) != 1 || live[0] != sec.LeaseID {
				t.Errorf("live leases %v, want only the new %s", live, sec.LeaseID)
			}
			if m := mentionsAll(log, "lease expired before it could be renewed", "replaced the credential"); len(m) > 0 {
				t.Errorf("vault-renew log lacks %q:\n%s", m, log)
			}
			if !t.Failed() {
				healed.Add(1)
			}
			return
		}
		if sec.LeaseID != lease0 {
			t.Errorf("lease changed from %s to %s: an outage shorter than the TTL must not cost the credential", lease0, sec.LeaseID)
		}
		if len(live) != 1 || live[0] != lease0 {
			t.Errorf("live leases %v, want only %s: no duplicate may be issued", live, lease0)
		}
		want := []string{"renewed lease"}
		switch c.rule.Fault {
		case testbed.Silent, testbed.Slow:
			// Silence and slowness delay the renewal.
		case testbed.Hang:
			// The request caught never gets an answer: the same renewal
			// goes out again on a new connection beside it.
			want = append(want, "sending the lease renewal again on a new connection")
		default:
			want = append(want, "retrying with the same lease")
		}
		if m := mentionsAll(log, want...); len(m) > 0 {
			t.Errorf("vault-renew log lacks %q:\n%s", m, log)
		}
		if strings.Contains(log, "level=ERROR") {
			t.Errorf("vault-renew logged an error:\n%s", log)
		}
		if !t.Failed() {
			kept.Add(1)
		}
	})
	figure(t, "faults", "vault-renew with %s leases: %d/%d outages of %s (one per fault, ending %s before expiry) ridden out on the same lease, no duplicate, recovered by itself; %d/1 outage longer than the TTL (%s) healed by itself with one new credential, live %s after Vault came back",
		ttl, kept.Load(), len(cases)-1, cases[0].length, ttl-cases[0].start-cases[0].length, healed.Load(), cases[len(cases)-1].length, healedAfter.Round(100*time.Millisecond))
}

// TestFaultsPostgres puts a TCP proxy between Vault and PostgreSQL: while
// the database is unreachable Vault cannot create the pod's user and
// answers with an error; vault-init retries it as transient and starts the
// pod once the database is back.
// dbRoleBehindProxy creates database role role, whose leases last ttl,
// on a connection of its own that reaches PostgreSQL through a TCP proxy
// the test can cut; it returns the proxy and the role's lease prefix.
func dbRoleBehindProxy(t *testing.T, role string, ttl time.Duration) (*testbed.Proxy, string) {
	t.Helper()
	ctx := context.Background()
	conn, admin := role+"conn", role+"admin"
	proxy, err := testbed.NewProxy(bed.PGAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	super, err := bed.PGSuperuser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adminPass := fmt.Sprintf("pw-%d", time.Now().UnixNano())
	noteSecret(adminPass)
	_, err = super.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s WITH LOGIN CREATEROLE PASSWORD '%s'`, admin, adminPass))
	super.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root := bed.Root()
	if _, err := root.Logical().Write("database/config/"+conn, map[string]any{
		"plugin_name":    "postgresql-database-plugin",
		"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/%s?sslmode=disable&connect_timeout=2", proxy.Addr(), testbed.PGDatabase),
		"username":       admin, "password": adminPass,
		"allowed_roles": role,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("database/roles/"+role, map[string]any{
		"db_name":               conn,
		"creation_statements":   []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`},
		"revocation_statements": []string{`DROP ROLE IF EXISTS "{{name}}";`},
		"default_ttl":           int(ttl.Seconds()), "max_ttl": 3600,
	}); err != nil {
		t.Fatal(err)
	}
	prefix := "database/creds/" + role + "/"
	t.Cleanup(func() {
		_ = proxy.Restore()
		revokePrefix(t, prefix)
	})
	return proxy, prefix
}

// TestRenewRidesOutADatabaseOutage: PostgreSQL unreachable from Vault
// over a renewal of a 20 s lease. Vault answers "failed to renew entry"
// (its database engine's error) and still holds the lease, which works to
// its expiry: vault-renew retries the same lease, stays ready, and keeps
// it once the database is back; it does not take the lease for gone.
func TestRenewRidesOutADatabaseOutage(t *testing.T) {
	t.Parallel()
	const role = "fltpgrenew"
	proxy, prefix := dbRoleBehindProxy(t, role, 20*time.Second)
	p := newPod(t)
	p.mustInit("--secret", "db=database/creds/"+role)
	before, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	sc := startRenewSidecar(t, p)
	// The renewal is due at about 14.5 s: the database is away from 11 s
	// to 17 s, and the lease ends at 20 s.
	time.Sleep(time.Until(issued.Add(11 * time.Second)))
	proxy.Cut()
	time.Sleep(time.Until(issued.Add(17 * time.Second)))
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(issued.Add(25 * time.Second)))
	after, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	logs := sc.stderr.String()
	if after.Secrets[0].LeaseID != before.Secrets[0].LeaseID || strings.Contains(logs, "no longer knows the lease") {
		t.Errorf("the lease was given up for a database outage (lease %s, then %s):\n%s", before.Secrets[0].LeaseID, after.Secrets[0].LeaseID, logs)
	}
	if !strings.Contains(logs, "failed to renew entry") || !strings.Contains(logs, "retrying with the same lease") {
		t.Errorf("no renewal met the outage, or it was not retried on the same lease:\n%s", logs)
	}
	user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
	if err := pgLogin(user, pass); err != nil {
		t.Errorf("the credential does not log in 25 s after it was issued (20 s lease): %v", err)
	}
	if n := len(leasesUnder(t, prefix)); n != 1 {
		t.Errorf("%d leases, want 1", n)
	}
}

func TestFaultsPostgres(t *testing.T) {
	t.Parallel()
	const role = "fltpg"
	proxy, prefix := dbRoleBehindProxy(t, role, time.Hour)
	proxy.Cut()
	time.AfterFunc(3*time.Second, func() { _ = proxy.Restore() })
	p := newPod(t)
	r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+role, "--timeout", "30s"), p.env...)
	if r.code != 0 {
		t.Fatalf("exit %d once PostgreSQL came back:\n%s", r.code, r.stderr)
	}
	noteSecret(p.token())
	if !strings.Contains(r.stderr, "retrying") {
		t.Errorf("the log should show the retries while PostgreSQL was down:\n%s", r.stderr)
	}
	user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
	if err := pgLogin(user, pass); err != nil {
		t.Errorf("the credential does not log in: %v", err)
	}
	if n := len(leasesUnder(t, prefix)); n != 1 {
		t.Errorf("%d leases after the outage, want 1", n)
	}
	figure(t, "faults", "PostgreSQL unreachable from Vault for 3s: vault-init retried Vault's errors and started the pod after %s with one lease", r.elapsed.Round(10*time.Millisecond))
}

// TestFaultsRevokeOnExit: the manifests end a pod's credentials in the
// sidecar itself (vault-renew --revoke-on-exit, on the SIGTERM the
// kubelet sends after the app exited). Against a failing Vault that stop
// must stay within --revoke-timeout, so the pod's termination grace
// period is never spent; vault-revoke finishes the work afterwards.
func TestFaultsRevokeOnExit(t *testing.T) {
	t.Parallel()
	const timeout = 3 * time.Second
	const bound = timeout + 2*time.Second
	var ok atomic.Int32
	var worst maxDuration
	concurrently(t, vaultFaults, func(fc faultCase) string { return fc.rule.Fault.String() }, func(t *testing.T, fc faultCase) {
		p, fp, prefix := podBehindFaultProxy(t, "fsc"+fc.rule.Fault.String(), time.Hour)
		dbCreds(t, filepath.Join(p.secretsDir, "db"))
		s := start(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--log-level", "debug",
			"--revoke-on-exit", "--revoke-timeout", timeout.String()}, p.env...)
		waitStartAnswered(t, s) // the fault hits a running sidecar, not its start
		if err := fp.Set(fc.rule); err != nil {
			t.Fatal(err)
		}
		took := s.stop(30 * time.Second)
		worst.observe(took)
		if took > bound {
			t.Errorf("vault-renew took %s to stop with --revoke-timeout %s, want at most %s:\n%s", took.Round(time.Millisecond), timeout, bound, s.stderr.String())
		}
		if err := fp.Clear(); err != nil {
			t.Fatal(err)
		}
		r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--timeout", "10s"}, p.env...)
		if r.code != 0 {
			t.Fatalf("vault-revoke after the fault cleared: exit %d:\n%s", r.code, r.stderr)
		}
		if left := leasesLeft(t, prefix, 10*time.Second); len(left) > 0 {
			t.Errorf("leases left after vault-revoke: %v", left)
		}
		if !t.Failed() {
			ok.Add(1)
		}
	})
	figure(t, "faults", "vault-renew --revoke-on-exit stopped by SIGTERM under a persistent Vault fault (--revoke-timeout %s): %d/%d stopped in time (slowest %s) and vault-revoke finished afterwards",
		timeout, ok.Load(), len(vaultFaults), worst.get().Round(10*time.Millisecond))
}
