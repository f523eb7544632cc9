package e2e

// The proof of vault-renew: the built sidecar keeps a pod's database
// credential working against the real Vault and PostgreSQL while leases
// reach their max TTL, the token reaches its max TTL, and Vault goes away
// for a while. An "app" reads the credential file every 0.5 s and queries
// PostgreSQL with whatever it holds; not one query may fail. Then what
// breaks it otherwise: batch tokens, a wall clock that jumps, an operator
// who revokes the lease or the token by hand, and a lost credential that
// must come back soon after Vault does.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// TestRenew runs its cases at the same time: each takes a minute or more
// of wall clock and mostly waits.
func TestRenew(t *testing.T) {
	cases := []struct {
		name string
		run  func(*testing.T)
	}{
		{"lease max TTL", renewLeaseMaxTTL},
		{"replaced lease lives to its end", renewReplacedLeaseLivesToItsEnd},
		{"token max TTL", renewTokenMaxTTL},
		{"vault outage", renewVaultOutage},
	}
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Go(func() { t.Run(c.name, c.run) })
	}
	wg.Wait()
}

// renewLeaseMaxTTL: a database role with default_ttl 10s and max_ttl 40s.
// The lease is renewed until it cannot grow, then replaced before it
// dies; the app never notices but for a new username.
func renewLeaseMaxTTL(t *testing.T) {
	const role = "renew-lease"
	if err := bed.CreateDBRole(role, 10*time.Second, 40*time.Second); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	p.mustInit("--secret", "db=database/creds/"+role)
	file := filepath.Join(p.secretsDir, "db")
	sc := startRenewSidecar(t, p)

	// /readyz and /metrics as a kubelet and Prometheus see them.
	time.Sleep(2 * time.Second)
	if code, body := httpGet(t, sc.url+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q; want 200 ready", code, body)
	}
	if code, body := httpGet(t, sc.url+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q; want 200", code, body)
	}
	m := sc.metrics(t)
	// Expiries are Unix times, so that an alert can say
	// podlease_secret_expiry_timestamp_seconds - time() < 120.
	now := float64(time.Now().Unix())
	if v := m[`podlease_secret_expiry_timestamp_seconds{secret="db"}`]; v-now < -1 || v-now > 10 {
		t.Errorf("podlease_secret_expiry_timestamp_seconds{secret=\"db\"} = %v, %v s from now; want 0 < v - now <= 10", v, v-now)
	}
	if v := m["podlease_token_expiry_timestamp_seconds"]; v-now < 3000 {
		t.Errorf("podlease_token_expiry_timestamp_seconds = %v, %v s from now; want about an hour", v, v-now)
	}
	for _, sample := range []string{`podlease_secret_renewals_total{secret="db"}`, `podlease_secret_rotations_total{secret="db"}`,
		`podlease_secret_renewal_failures_total{secret="db",operation="renew"}`, `podlease_secret_renewal_failures_total{secret="db",operation="rotate"}`,
		`podlease_secret_renewal_failures_total{secret="db",operation="reissue"}`, `podlease_secret_renewal_failures_total{secret="db",operation="reread"}`,
		"podlease_logins_total", "podlease_revoked"} {
		if v, ok := m[sample]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v); want 0 at start", sample, v, ok)
		}
	}

	app := runApp(t, p, file, 75*time.Second)
	app.mustNotFail(t)
	if len(app.users) < 2 {
		t.Errorf("usernames over 75s: %v; want a change: the lease's max TTL is 40s", app.users)
	}
	m = sc.metrics(t)
	if v := m[`podlease_secret_rotations_total{secret="db"}`]; v < 1 {
		t.Errorf("rotations = %v; want at least 1", v)
	}
	if v := m[`podlease_secret_renewals_total{secret="db"}`]; v < 4 {
		t.Errorf("renewals = %v; want several", v)
	}
	for _, op := range []string{"renew", "rotate", "reissue", "reread"} {
		if v := m[`podlease_secret_renewal_failures_total{secret="db",operation="`+op+`"}`]; v != 0 {
			t.Errorf("%s failures = %v; want 0", op, v)
		}
	}
	if leases := leasesUnder(t, "database/creds/"+role); len(leases) > 2 {
		t.Errorf("live leases at the end: %v; want the current one and at most one in its grace period", leases)
	}
	if len(app.users) >= 2 && dbRoleExists(t, app.users[0]) {
		// Replaced at ~35s, so revoked at its end, ~40s: the user must be
		// dropped.
		t.Errorf("the first user %s still exists in PostgreSQL: the replaced lease was not revoked", app.users[0])
	}
	mem := vmStatus(t, sc.pid)
	t.Logf("MEASURED vault-renew memory after 77s, one lease replaced every ~35s, /metrics scraped: VmRSS %.1f MiB (anonymous %.1f MiB, file-backed %.1f MiB), peak VmHWM %.1f MiB",
		mem["VmRSS"], mem["RssAnon"], mem["RssFile"], mem["VmHWM"])
	// The file-backed part is the binary's pages, which newer kernels map
	// in large folios whether touched or not; the anonymous part is what
	// vault-renew allocates.
	if mem["RssAnon"] > 6 || mem["VmRSS"] > 20 {
		t.Errorf("vault-renew memory grew: VmRSS %.1f MiB, anonymous %.1f MiB; want about 11 and 3", mem["VmRSS"], mem["RssAnon"])
	}

	// vault-revoke runs while the sidecar is still up (by hand, or from a
	// fallback hook on clusters without native sidecars): the sidecar must
	// stop renewing and turn unready, then exit promptly on SIGTERM.
	if r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}); r.code != 0 {
		t.Fatalf("vault-revoke exited %d:\n%s", r.code, r.stderr)
	}
	waitUntil(t, 2*time.Second, "/readyz to answer 503 after vault-revoke", func() bool {
		code, _ := httpGet(t, sc.url+"/readyz")
		return code == 503
	})
	if v := sc.metrics(t)["podlease_revoked"]; v != 1 {
		t.Errorf("podlease_revoked = %v after vault-revoke; want 1", v)
	}
	sc.mustExitPromptly(t)
}

// renewReplacedLeaseLivesToItsEnd: a lease replaced within the grace
// period of its end (here at its max TTL, 20s) stays valid for all of its
// life, so that a connection the app opened with it (a pool's, or one
// opened just before the new file came) works until Vault ends the lease;
// then its user is gone and state.json no longer lists it.
func renewReplacedLeaseLivesToItsEnd(t *testing.T) {
	const role = "renew-end"
	if err := bed.CreateDBRole(role, 10*time.Second, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	p.mustInit("--secret", "db=database/creds/"+role)
	file := filepath.Join(p.secretsDir, "db")
	oldUser, oldPass := dbCreds(t, file)
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	oldLease := st.Secrets[0].LeaseID
	sc := startRenewSidecar(t, p)
	ctx := context.Background()
	conn, err := bed.PGConnect(ctx, oldUser, oldPass)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// The rotation comes 5s before the max TTL.
	waitUntil(t, 25*time.Second, "the credential's replacement before its max TTL", func() bool {
		u, _ := dbCreds(t, file)
		return u != oldUser
	})
	sec, err := bed.Root().Sys().LookupWithContext(ctx, oldLease)
	if err != nil {
		t.Fatalf("look up the replaced lease: %v", err)
	}
	end, err := time.Parse(time.RFC3339Nano, fmt.Sprint(sec.Data["expire_time"]))
	if err != nil {
		t.Fatalf("the replaced lease's expire_time: %v", err)
	}
	// The file is written before state.json lists the replaced lease
	// (the new one is journaled as pending until then): wait for it.
	retiring := func() bool {
		st, err = state.Load(p.stateDir)
		return err == nil && len(st.Retiring) == 1 && st.Retiring[0].LeaseID == oldLease
	}
	waitUntil(t, 5*time.Second, "state.json to list the replaced lease", retiring)
	// The planned revocation, to the millisecond: at the end Vault
	// counts, not before it.
	if at := st.Retiring[0].RevokeAt; at.Before(end) {
		t.Errorf("the replaced lease is to be revoked %s before its end", end.Sub(at).Round(time.Millisecond))
	}

	// The held connection, queried every 100ms until it fails (Vault
	// dropped the user) or 3s past the end.
	var lastOK, failedAt time.Time
	var failure error
	for time.Now().Before(end.Add(3 * time.Second)) {
		began := time.Now()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var who string
		err := conn.QueryRow(qctx, "SELECT current_user").Scan(&who)
		cancel()
		if err != nil {
			failedAt, failure = began, err
			break
		}
		lastOK = began
		time.Sleep(100 * time.Millisecond)
	}
	// A failure before the end shows as both: no query working in the
	// last half second and one failing then. (A stall of this process
	// shows as one of them at most, unless it spans the end.)
	early := end.Add(-500 * time.Millisecond)
	if lastOK.Before(early) && failure != nil && failedAt.Before(early) {
		t.Errorf("the old credential stopped working %s before its lease's end: %v", end.Sub(failedAt).Round(time.Millisecond), failure)
	}
	if failure == nil {
		t.Logf("MEASURED a connection held with a lease replaced 5s before its max TTL: last query working at %+dms from the lease's end, none failing until 3s after it", lastOK.Sub(end).Milliseconds())
	} else {
		t.Logf("MEASURED a connection held with a lease replaced 5s before its max TTL: last query working at %+dms from the lease's end, the first failing at %+dms (%v)",
			lastOK.Sub(end).Milliseconds(), failedAt.Sub(end).Milliseconds(), failure)
	}
	waitUntil(t, 5*time.Second, "the replaced lease's user to be dropped", func() bool { return !dbRoleExists(t, oldUser) })
	waitUntil(t, 5*time.Second, "state.json to stop listing the replaced lease", func() bool {
		st, err := state.Load(p.stateDir)
		return err == nil && len(st.Retiring) == 0
	})
	if !strings.Contains(sc.stderr.String(), "revoked the replaced lease") {
		t.Errorf("vault-renew did not confirm the replaced lease's end with a revocation:\n%s", sc.stderr.String())
	}
	sc.mustExitPromptly(t)
}

// renewTokenMaxTTL: the token's max TTL (25s) is far shorter than the
// lease's (1h). vault-renew warns, logs in again before each token dies,
// re-issues the credential under the new token, and the app never fails.
func renewTokenMaxTTL(t *testing.T) {
	const role = "renew-token"
	if err := bed.CreateK8sRole(role, 25*time.Second, 25*time.Second, testbed.Policy); err != nil {
		t.Fatal(err)
	}
	if err := bed.CreateDBRole(role, time.Hour, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	p.mustInit("--role", role, "--secret", "db=database/creds/"+role)
	firstToken := p.token()
	file := filepath.Join(p.secretsDir, "db")
	sc := startRenewSidecar(t, p)
	const warning = "the token's max TTL is shorter than the leases it holds"
	waitUntil(t, 3*time.Second, "the warning about the token's max TTL at start", func() bool {
		return strings.Contains(sc.stderr.String(), warning)
	})

	app := runApp(t, p, file, 60*time.Second)
	app.mustNotFail(t)
	if p.token() == firstToken {
		t.Error("the token file still holds vault-init's token after 60s of a 25s max TTL")
	}
	m := sc.metrics(t)
	if v := m["podlease_logins_total"]; v < 2 {
		t.Errorf("logins = %v over 60s; want one before each token's 25s max TTL", v)
	}
	if len(app.users) < 3 {
		t.Errorf("usernames over 60s: %v; want a new credential under each new token", app.users)
	}
	if leases := leasesUnder(t, "database/creds/"+role); len(leases) > 2 {
		t.Errorf("live leases at the end: %v; the old tokens' leases must go with them", leases)
	}
	logs := sc.stderr.String()
	if !strings.Contains(logs, `role=`+role) {
		t.Errorf("the warning does not name the auth role to fix")
	}
	sc.mustExitPromptly(t)
}

// renewVaultOutage: Vault becomes unreachable (a TCP proxy between the
// sidecar and Vault is cut) for 10s, less than the lease's remaining TTL,
// across the renewal. When Vault is back the same lease is renewed: no new
// credential, no failed query.
func renewVaultOutage(t *testing.T) {
	const role = "renew-outage"
	if err := bed.CreateDBRole(role, 20*time.Second, time.Hour); err != nil {
		t.Fatal(err)
	}
	proxy, err := testbed.NewProxy(bed.VaultHostPort)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	p := newPod(t)
	p.env = []string{"VAULT_ADDR=http://" + proxy.Addr()}
	p.mustInit("--secret", "db=database/creds/"+role)
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	lease := st.Secrets[0].LeaseID
	issued := time.Now()
	file := filepath.Join(p.secretsDir, "db")
	sc := startRenewSidecar(t, p)

	// The renewal is due 14.37-14.56s after issue (0.7185-0.728 of 20s).
	outage := make(chan error, 1)
	go func() {
		time.Sleep(time.Until(issued.Add(5 * time.Second)))
		proxy.Cut()
		time.Sleep(10 * time.Second)
		outage <- proxy.Restore()
	}()
	app := runApp(t, p, file, 30*time.Second)
	if err := <-outage; err != nil {
		t.Fatal(err)
	}
	app.mustNotFail(t)
	if len(app.users) != 1 {
		t.Errorf("usernames: %v; want the same credential throughout", app.users)
	}
	if leases := leasesUnder(t, "database/creds/"+role); len(leases) != 1 || leases[0] != lease {
		t.Errorf("live leases after the outage: %v; want only vault-init's %s", leases, lease)
	}
	if ttl, err := leaseTTL(lease); err != nil || ttl < 5*time.Second {
		t.Errorf("lease TTL after the outage: %s (%v); want it renewed", ttl, err)
	}
	if after, err := state.Load(p.stateDir); err != nil || after.Secrets[0].LeaseID != lease {
		t.Errorf("state.json after the outage holds another lease (%v)", err)
	}
	m := sc.metrics(t)
	if v := m[`podlease_secret_renewal_failures_total{secret="db",operation="renew"}`]; v < 1 {
		t.Errorf("renew failures = %v; want the outage counted as failed renewals", v)
	}
	if v := m[`podlease_secret_renewal_failures_total{secret="db",operation="rotate"}`]; v != 0 {
		t.Errorf("rotate failures = %v; want 0: the outage cost no rotation", v)
	}
	if v := m[`podlease_secret_rotations_total{secret="db"}`]; v != 0 {
		t.Errorf("rotations = %v; want 0", v)
	}
	if code, _ := httpGet(t, sc.url+"/readyz"); code != 200 {
		t.Errorf("/readyz after the outage = %d; want 200", code)
	}
	logs := sc.stderr.String()
	if missing := mentionsAll(logs, "lease renewal failed; retrying with the same lease", "connection refused", "renewed lease"); len(missing) > 0 {
		t.Errorf("the sidecar's log lacks %q", missing)
	}
	sc.mustExitPromptly(t)
}

// renewSidecar is a running vault-renew.
type renewSidecar struct {
	*started
	url string
	pid int
}

// startRenewSidecar starts vault-renew for p and waits until it is ready.
func startRenewSidecar(t *testing.T, p *pod, extra ...string) *renewSidecar {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := start(t, "vault-renew", append([]string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", addr}, extra...), p.env...)
	sc := &renewSidecar{started: s, url: "http://" + addr, pid: s.cmd.Process.Pid}
	waitUntil(t, 10*time.Second, "vault-renew's /readyz to answer 200", func() bool {
		code, _ := httpGet(t, sc.url+"/readyz")
		return code == 200
	})
	return sc
}

// metrics scrapes /metrics into sample → value.
func (sc *renewSidecar) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, sc.url+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	// Prometheus' own parser must accept the hand-written exposition.
	parser := expfmt.NewTextParser(model.LegacyValidation)
	if _, err := parser.TextToMetricFamilies(strings.NewReader(body)); err != nil {
		t.Fatalf("/metrics is not valid Prometheus text format: %v", err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// mustExitPromptly sends SIGTERM and checks a prompt, clean exit and a log
// without secrets.
func (sc *renewSidecar) mustExitPromptly(t *testing.T) {
	t.Helper()
	if took := sc.stop(5 * time.Second); took > time.Second {
		t.Errorf("vault-renew took %s to exit after SIGTERM; want under 1s", took.Round(time.Millisecond))
	}
	if code := sc.exitCode(); code != 0 {
		t.Errorf("vault-renew exited %d after SIGTERM; want 0", code)
	}
	assertNoSecret(t, "vault-renew's log", sc.stderr.String())
}

// appRun is what the app saw.
type appRun struct {
	queries  int
	failures []string
	users    []string // in order, each change once
}

// runApp plays the app for d: every 0.5 s it reads the credential file as
// it is at that moment, connects to PostgreSQL with it and runs a query.
func runApp(t *testing.T, p *pod, file string, d time.Duration) appRun {
	t.Helper()
	var r appRun
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		user, password := dbCreds(t, file) // notes the password as a secret
		noteSecret(p.token())
		r.queries++
		if err := appQuery(user, password); err != nil {
			r.failures = append(r.failures, fmt.Sprintf("%s user %s: %v", time.Now().Format("15:04:05.000"), user, err))
		}
		if n := len(r.users); n == 0 || r.users[n-1] != user {
			r.users = append(r.users, user)
		}
	}
	return r
}

func (r appRun) mustNotFail(t *testing.T) {
	t.Helper()
	t.Logf("app: %d queries, %d failed, users %v", r.queries, len(r.failures), r.users)
	if len(r.failures) > 0 {
		t.Errorf("%d of %d app queries failed:\n%s", len(r.failures), r.queries, strings.Join(r.failures, "\n"))
	}
}

func appQuery(user, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := bed.PGConnect(ctx, user, password)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
		return err
	}
	if who != user {
		return fmt.Errorf("connected as %q", who)
	}
	return nil
}

// vmStatus returns the memory lines of /proc/PID/status (VmRSS, VmHWM,
// RssAnon, RssFile...) in MiB.
func vmStatus(t *testing.T, pid int) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m[strings.TrimSuffix(f[0], ":")] = kb / 1024
		}
	}
	return m
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("waited %s for %s", d, what)
		}
	}
}

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
	figure(t, "hostile-review", "wall clock jumped past expires_at: %d leases live in Vault and unnamed in state.json over 6 s; old lease revoked within 3 s after --grace 3s: %v; token kept (renew-self at start, not the clock): %v", unlisted, ttl == 0, tokenKept)
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

// TestRenewRecoversAfterLoss cuts Vault off (connections refused) until
// the pod's lease has expired and a good while longer, so that a backoff
// would have grown, then restores it: the app must have a working
// credential again within a few seconds, since vault-renew retries a lost
// credential at most 3s apart. The figure is the time from Vault's return
// to a file whose credential logs in to PostgreSQL.
func TestRenewRecoversAfterLoss(t *testing.T) {
	t.Parallel()
	const ttl = 8 * time.Second
	const role = "rcvlost"
	p, fp, prefix := podBehindFaultProxy(t, role, ttl)
	t0 := time.Now()
	file := filepath.Join(p.secretsDir, "db")
	user0, pass0 := dbCreds(t, file)
	s := start(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--log-level", "debug"}, p.env...)

	time.Sleep(time.Until(t0.Add(2 * time.Second)))
	if err := fp.Set(testbed.Rule{Fault: testbed.Refuse}); err != nil {
		t.Fatal(err)
	}
	// The lease ends at ttl; 20s more of outage lets a backoff grow to
	// its longest.
	time.Sleep(time.Until(t0.Add(ttl + 20*time.Second)))
	if err := pgLogin(user0, pass0); err == nil {
		t.Fatal("the first credential still logs in after its lease ended: the outage did not cost it")
	}
	if err := fp.Clear(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	var took time.Duration
	for {
		if user, pass := dbCreds(t, file); user != user0 && pgLogin(user, pass) == nil {
			took = time.Since(back)
			break
		}
		if time.Since(back) > time.Minute {
			t.Fatalf("no working credential a minute after Vault came back:\n%s", s.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	live := leasesUnder(t, prefix)
	if len(live) != 1 {
		t.Errorf("live leases %v; want exactly the new one", live)
	}
	if m := mentionsAll(s.stderr.String(), "lease expired before it could be renewed", "replaced the credential", `old_lease_expires_in="expired `); len(m) > 0 {
		t.Errorf("vault-renew log lacks %q:\n%s", m, s.stderr.String())
	}
	figure(t, "faults", "vault-renew after a lost credential (Vault refused connections for %s, the %s lease lost %s before Vault came back): a working credential in the file %s after Vault answered again",
		(ttl + 18*time.Second).Round(time.Second), ttl, (20 * time.Second).Round(time.Second), took.Round(10*time.Millisecond))
	// Generous for a loaded 2-core machine: the retries are at most 3s
	// apart, then one read and one write.
	if took > 5*time.Second {
		t.Errorf("a working credential %s after Vault came back; want under 5s", took)
	}
}

// TestUseLimitedTokenRefused: a kubernetes role with token_num_uses. Such
// a token dies, and Vault revokes its leases with it, after a few
// requests, while the files still hold them: vault-init refuses it before
// reading anything (checked against Vault 1.21's login answer, which
// carries num_uses), gives it back, and exits 1 naming the setting.
func TestUseLimitedTokenRefused(t *testing.T) {
	t.Parallel()
	const role = "hr-num-uses"
	_, err := bed.Root().Logical().WriteWithContext(context.Background(), "auth/kubernetes/role/"+role, map[string]any{
		"bound_service_account_names":      []string{testbed.ServiceAccount},
		"bound_service_account_namespaces": []string{testbed.Namespace},
		"audience":                         testbed.Audience,
		"token_policies":                   []string{testbed.Policy},
		"token_num_uses":                   3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bed.CreateDBRole(role, time.Hour, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	r := run(t, "vault-init", p.initArgs("--role", role, "--secret", "db=database/creds/"+role), p.env...)
	if r.code != 1 || !strings.Contains(r.stderr, "limited to 3 uses") || !strings.Contains(r.stderr, "token_num_uses") {
		t.Errorf("exit %d; want 1 naming the use limit and token_num_uses:\n%s", r.code, r.stderr)
	}
	assertNothingLeft(t, p)
	if left := leasesLeft(t, "database/creds/"+role, 5*time.Second); len(left) > 0 {
		t.Errorf("leases issued: %v; want none", left)
	}
}

// TestRenewIgnoresSIGHUP: SIGHUP's default action would end the sidecar
// on the spot, without --revoke-on-exit; it is ignored, and SIGTERM still
// revokes.
func TestRenewIgnoresSIGHUP(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.mustInit("--secret", "db=database/creds/"+testbed.DBRole)
	sc := startRenewSidecar(t, p, "--revoke-on-exit")
	if err := syscall.Kill(sc.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if code, _ := httpGet(t, sc.url+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d after SIGHUP; want the sidecar running and ready\n%s", code, sc.stderr.String())
	}
	sc.mustExitPromptly(t)
	if !strings.Contains(sc.stderr.String(), "revoked every credential on exit") {
		t.Errorf("no revocation on SIGTERM after a SIGHUP:\n%s", sc.stderr.String())
	}
}
