package renew

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

func TestRenewsAtFractionAndKeepsTheSameLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 20 * time.Second })
		lease := f.state().Secrets[0].LeaseID
		before, _ := os.ReadFile(filepath.Join(f.secretsDir, "db"))
		f.start()

		time.Sleep(14 * time.Second)
		if _, _, renewals, _ := v.counts(); renewals != 0 {
			t.Fatalf("lease renewed %d times before 73%% of its 20s TTL", renewals)
		}
		time.Sleep(time.Second) // 15s: the renewal at 14.6s is done
		_, issued, renewals, tokenRenewals := v.counts()
		if renewals != 1 || issued != 1 {
			t.Fatalf("after 15s: %d renewals, %d credentials issued; want 1 renewal of the one credential vault-init issued", renewals, issued)
		}
		if tokenRenewals != 1 {
			t.Errorf("token renewed %d times; want once, at start", tokenRenewals)
		}
		st := f.state()
		if got := st.Secrets[0].ExpiresAt; !got.After(epoch.Add(30 * time.Second)) {
			t.Errorf("state.json expires_at = %s after the renewal; want about 34.6s after start", got.Sub(epoch))
		}

		f.appLoop(60 * time.Second)
		_, issued, renewals, _ = v.counts()
		if issued != 1 || renewals < 4 {
			t.Errorf("after 75s: %d renewals, %d credentials; want 5 renewals of the one credential", renewals, issued)
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

// Vault starts a renewed TTL when it handles the request, not when the
// answer arrives: with slow answers, the expiry vault-renew keeps (and
// writes to state.json) must not run past Vault's, or its margin shrinks
// by the latency at every renewal.
func TestExpiryCountsFromTheRequestNotTheAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f, lease := newSlowDBFixture(t, 20*time.Second, 1200*time.Millisecond)
		f.start()
		for range 4 {
			time.Sleep(15 * time.Second)
			v.mu.Lock()
			vaultEnds := v.leases[lease].expiry
			v.mu.Unlock()
			if got := f.state().Secrets[0].ExpiresAt; got.After(vaultEnds) {
				t.Fatalf("state.json says the lease ends at %s, after Vault's %s: the answer's delay was counted as lease time",
					got.Sub(epoch), vaultEnds.Sub(epoch))
			}
		}
		if _, issued, renewals, _ := v.counts(); issued != 1 || renewals < 4 {
			t.Errorf("after 60s of 1.2s answers: %d renewals, %d credentials; want at least 4 renewals of the one credential", renewals, issued)
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
}

func TestRotatesBeforeMaxTTLAndRevokesAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second })
		oldLease := f.state().Secrets[0].LeaseID
		oldUser, _ := f.creds("db")
		f.start("--grace", "3s")

		// Renewals at 7.3s (to 17.3s) and 14.6s (capped: max TTL at 20s,
		// 5s left), rotation at once: expiry minus max(10s/3, 5s).
		seen := f.appLoop(16 * time.Second)
		user, _ := f.creds("db")
		if user == oldUser || len(seen) != 2 {
			t.Fatalf("after 16s the app saw users %v; want a new one before the old lease's max TTL\nlogs:\n%s", seen, f.logs)
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

		f.appLoop(3 * time.Second) // 19s: grace (3s from 14.6s) over
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
		f.wantLog("max TTL is near")
	})
}

// TestLateRotationKeepsTheOldLeaseToItsEnd: Vault cannot issue from just
// before a rotation at max TTL until shortly before the old lease ends
// (a failover). The read's retries come closer together toward that end,
// so one lands once Vault issues again; and the replaced lease, which an
// app may have read just before the new file came, stays valid until its
// end instead of being revoked as soon as it is replaced.
func TestLateRotationKeepsTheOldLeaseToItsEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second })
		oldLease := f.state().Secrets[0].LeaseID
		oldUser, _ := f.creds("db")
		f.start()
		// Renewals at 5s, 10s and 15s; the last comes back capped at the
		// max TTL (20s), and the rotation starts at once: its reads fail
		// until 19s.
		f.appLoop(14 * time.Second)
		v.setFailCreds(true)
		f.appLoop(5 * time.Second)
		v.setFailCreds(false)
		f.appLoop(500 * time.Millisecond) // 19.5s
		if user, _ := f.creds("db"); user == oldUser {
			t.Fatalf("at %s the file still holds the old credential, which ends at 20s\nlogs:\n%s", f.elapsed(), f.logs)
		}
		time.Sleep(400 * time.Millisecond) // 19.9s
		if !v.alive(oldLease) {
			t.Errorf("the replaced lease was revoked before its end at 20s\nlogs:\n%s", f.logs)
		}
		f.appLoop(2 * time.Second) // 21.9s, past its end
		if r := f.state().Retiring; len(r) != 0 {
			t.Errorf("state.json retiring = %+v after the replaced lease ended; want none", r)
		}
		if n := v.count("sys/leases/revoke"); n != 1 {
			t.Errorf("%d revocation requests; want one, for the replaced lease once it ended", n)
		}
		f.wantLog("revoked the replaced lease")
		f.stop()
	})
}

func TestOutageShorterThanTTLKeepsTheSameLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		lease := f.state().Secrets[0].LeaseID
		f.start()

		// Vault goes down before the first renewal, due at 5s (a 10s lease
		// keeps at least 5s), and not at that instant: which of two
		// goroutines woken at the same fake time runs first is not defined.
		time.Sleep(4500 * time.Millisecond)
		v.setDown(true)
		time.Sleep(4 * time.Second) // 8.5s: the renewal due at 5s keeps failing
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
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		f.start("--exit-on-failure")
		time.Sleep(4500 * time.Millisecond) // before the renewal due at 5s, not at that instant
		v.setDown(true)
		time.Sleep(6500 * time.Millisecond)
		if f.running() {
			t.Fatal("still running 1s after the lease expired, with --exit-on-failure")
		}
		if code := f.stop(); code != 1 {
			t.Errorf("exit code %d; want 1", code)
		}
		f.wantLog("expired while Vault kept failing")
	})
}

func TestLostLeaseIsReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		lease := f.state().Secrets[0].LeaseID
		f.start()
		time.Sleep(2 * time.Second)
		v.mu.Lock()
		v.leases[lease].revoked = true // an operator revoked it
		v.mu.Unlock()
		time.Sleep(6 * time.Second) // renewal at 7.3s: 400, replace at once
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

// TestLostCredentialIsReplacedSoonAfterVaultReturns: Vault is down for
// 25s, so a 10s lease is lost; once Vault answers, a new credential is in
// the file within a few seconds, not after a backoff grown during the
// outage; and the retries in between say that the old lease expired.
func TestLostCredentialIsReplacedSoonAfterVaultReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		f.start()
		time.Sleep(4500 * time.Millisecond) // before the renewal due at 5s, not at that instant
		v.setDown(true)
		time.Sleep(25500 * time.Millisecond) // the lease ended at 10s
		if code, _ := f.get("/readyz"); code != 503 {
			t.Errorf("/readyz with the credential lost = %d; want 503", code)
		}
		v.setDown(false)
		back := time.Now()
		for {
			if user, _ := f.creds("db"); v.aliveUser(user) {
				break
			}
			if time.Since(back) > time.Minute {
				t.Fatalf("no working credential a minute after Vault came back\nlogs:\n%s", f.logs)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// At most 3s between attempts (2s ±50%), plus the attempt.
		if took := time.Since(back); took > 3500*time.Millisecond {
			t.Errorf("a working credential %s after Vault came back; want within 3.5s\nlogs:\n%s", took, f.logs)
		}
		logs := f.logs.String()
		if strings.Contains(logs, "old_lease_expires_in=never") {
			t.Errorf("a lease that expired is logged as never expiring:\n%s", logs)
		}
		if !strings.Contains(logs, `old_lease_expires_in="expired `) {
			t.Errorf("the failed replacements do not say the old lease expired:\n%s", logs)
		}
		f.stop()
	})
}

// TestLeaseWorkWaitsForTheNewToken: the token ends while logins keep
// failing; the lease under it does not try its dead token (which Vault
// refuses) but waits for the login, which re-issues it.
func TestLeaseWorkWaitsForTheNewToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) {
			v.tokenTTL, v.tokenMax = 10*time.Second, 10*time.Second
			v.leaseTTL = 10 * time.Second
		})
		v.mu.Lock()
		v.failLogin = true
		v.mu.Unlock()
		f.start()
		time.Sleep(30 * time.Second) // the token ended at 10s, its lease with it
		v.mu.Lock()
		v.failLogin = false
		v.mu.Unlock()
		time.Sleep(5 * time.Second)
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Fatalf("no working credential once logins work again\nlogs:\n%s", f.logs)
		}
		v.mu.Lock()
		denied := v.denied
		v.mu.Unlock()
		logs := f.logs.String()
		if denied > 0 || strings.Contains(logs, "permission denied") {
			t.Errorf("%d requests with the dead token while the login was retrying; want none\nlogs:\n%s", denied, logs)
		}
		if !strings.Contains(logs, "logged in again") {
			t.Errorf("no login after the token ended:\n%s", logs)
		}
		f.stop()
	})
}

// TestLeaseRenewalFailures: a lease Vault will not renew is replaced
// before it expires; one whose renewal fails is retried, same lease.
func TestLeaseRenewalFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    int
		msg     string
		log     string
		replace bool
	}{
		{"not renewable: replaced before it expires", 400, "lease is not renewable", "Vault says the lease is not renewable", true},
		{"Vault fails: retried with the same lease", 500, "internal error", "lease renewal failed; retrying with the same lease", false},
		{"the node stepped down: retried with the same lease", 400, "failed to persist lease entry: node is not the leader", "lease renewal failed; retrying with the same lease", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
				lease := f.state().Secrets[0].LeaseID
				v.answer("sys/leases/renew", tc.code, tc.msg)
				f.start()
				f.appLoop(8 * time.Second) // past the renewal at 7.3s
				v.answer("sys/leases/renew", 0, "")
				f.appLoop(8 * time.Second)
				f.wantLog(tc.log)
				if replaced := f.state().Secrets[0].LeaseID != lease; replaced != tc.replace {
					t.Errorf("lease replaced: %v; want %v", replaced, tc.replace)
				}
				f.stop()
			})
		})
	}
}

// TestLongOutageIsQuietAndPatient: Vault refuses every connection for
// 4h, so the 1h token and lease are lost. After the first failures each
// credential logs a line a minute, and once the loss has lasted
// lostPatience the attempts come at most every lostLongCap (±50%), not
// every 2s: a fleet that lost its credentials together does not hammer a
// Vault coming back. When Vault answers, a new credential is still in the
// file within a wait.
func TestLongOutageIsQuietAndPatient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, nil)
		f.start("--log-level", "info") // the default
		time.Sleep(time.Minute)
		v.setDown(true)
		time.Sleep(2 * time.Hour) // both are lost by now, and have been for long
		lines, requests := strings.Count(f.logs.String(), "\n"), v.requestsRefused()
		time.Sleep(2 * time.Hour)
		lines, requests = strings.Count(f.logs.String(), "\n")-lines, v.requestsRefused()-requests
		// Two credentials (the lease and the token) a line a minute each,
		// and a few more where one phase gives way to the next.
		if lines > 2*120+10 {
			t.Errorf("%d log lines in the last 2h of a 4h outage; want about one a minute per credential\nthe last ones:\n%s", lines, lastLines(f.logs.String(), 10))
		}
		// At most one request every lostLongCap/2 per credential.
		if max := 2 * int(2*time.Hour/(lostLongCap/2)); requests > max {
			t.Errorf("%d requests in the last 2h of a 4h outage; want at most %d", requests, max)
		}
		if !strings.Contains(f.logs.String(), "failures_not_logged=") {
			t.Errorf("no line says how many failures went unlogged\nthe last ones:\n%s", lastLines(f.logs.String(), 10))
		}
		v.setDown(false)
		back := time.Now()
		for {
			if user, _ := f.creds("db"); v.aliveUser(user) {
				break
			}
			if time.Since(back) > 2*lostLongCap {
				t.Fatalf("no working credential %s after Vault came back\nthe last log lines:\n%s", 2*lostLongCap, lastLines(f.logs.String(), 20))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%d log lines and %d requests in the last 2h of the outage; a working credential %s after Vault came back", lines, requests, time.Since(back))
		f.stop()
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestHolds: what vault-renew finds in the shared secrets dir is read
// without following a symlink, blocking on a FIFO or reading past what
// the file should hold.
func TestHolds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := []byte(`{"password":"x"}`)
	path := func(name string) string { return filepath.Join(dir, name) }
	if err := os.WriteFile(path("same"), want, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path("longer"), append(want, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(path("same"), path("link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path("fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{"same": true, "longer": false, "link": false, "fifo": false, "missing": false} {
		done := make(chan bool, 1)
		go func() { done <- holds(path(name), want) }()
		select {
		case got := <-done:
			if got != ok {
				t.Errorf("holds(%s) = %v, want %v", name, got, ok)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("holds(%s) blocked", name)
		}
	}
}

// TestClockSetBackBeforeStart: state.json's times are wall-clock times;
// set back 30 min between vault-init and vault-renew, they put the 1h
// lease's end 30 min too late, where scheduling by them would let it
// expire unrenewed. An expiry further away than the lease's TTL is
// impossible, so the lease is renewed at once and keeps working.
func TestClockSetBackBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, nil) // leases of 1h
		st := f.state()
		lease := st.Secrets[0].LeaseID
		st.Secrets[0].ExpiresAt = st.Secrets[0].ExpiresAt.Add(30 * time.Minute)
		if err := state.Save(f.stateDir, st); err != nil {
			t.Fatal(err)
		}
		f.start()
		time.Sleep(time.Second)
		f.wantLog("the clock was set back")
		if _, _, renewals, _ := v.counts(); renewals != 1 {
			t.Errorf("%d lease renewals at start; want 1", renewals)
		}
		time.Sleep(61 * time.Minute) // Vault would have ended it at 60m
		if !v.alive(lease) {
			t.Errorf("the lease expired in Vault\n%s", f.logs)
		}
		f.stop()
	})
}

// TestLongLossReadsArePaced: the lease is lost while the token lives
// (renewals and reads refused: the database engine down). Once the loss
// has lasted lostPatience, a read is one request, and reads come at most
// every lostLongCap/2: a read retrying inside itself would undo the pace
// between reads.
func TestLongLossReadsArePaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) {
			v.tokenTTL, v.tokenMax = 24*time.Hour, 48*time.Hour
			v.leaseTTL, v.leaseMax = 5*time.Minute, 24*time.Hour
		})
		f.start()
		time.Sleep(time.Minute)
		v.answer("sys/leases/renew", 503, "database plugin unavailable")
		v.setFailCreds(true)
		time.Sleep(time.Hour)
		v.mu.Lock()
		before := v.asked["database/creds/app"]
		v.mu.Unlock()
		time.Sleep(time.Hour)
		v.mu.Lock()
		reads := v.asked["database/creds/app"] - before
		v.mu.Unlock()
		if most := int(time.Hour / (lostLongCap / 2)); reads > most || reads == 0 {
			t.Errorf("%d reads in the second hour of a lost lease; want 1 to %d", reads, most)
		}
		v.setFailCreds(false)
		v.answer("sys/leases/renew", 0, "")
		f.stop()
	})
}

// TestRetiringRetriesAreThrottled: a replaced lease whose revocation
// fails through an outage logs its first three failures, then a line a
// minute, as every other retried credential does.
func TestRetiringRetriesAreThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) {
			v.tokenTTL, v.tokenMax = 24*time.Hour, 48*time.Hour
			v.leaseTTL, v.leaseMax = time.Hour, 2*time.Hour
		})
		f.start("--log-level", "info")
		for _, issued, _, _ := v.counts(); issued < 2; _, issued, _, _ = v.counts() {
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second)
		v.setDown(true) // before the grace ends: the revocation fails
		time.Sleep(15 * time.Minute)
		n := strings.Count(f.logs.String(), "revoking the replaced lease failed; retrying")
		if n == 0 || n > 3+15 {
			t.Errorf("%d lines for one replaced lease in a 15 min outage; want the first three, then one a minute", n)
		}
		v.setDown(false)
		f.stop()
	})
}
