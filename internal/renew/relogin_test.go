package renew

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

func TestTokenMaxTTLLogsInAgainAndReissues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second })
		oldState := f.state()
		oldToken, _ := state.ReadToken(f.stateDir)
		oldUser, _ := f.creds("db")
		f.start()

		// The token renewal at start asks for as long as the lease (1h) and
		// gets 20s: the max TTL is known at once, so the warning comes at
		// start and the login 5s (max(10s/3, 5s)) before the hard expiry.
		time.Sleep(time.Second)
		f.wantLog("the token's max TTL is shorter than the leases it holds")
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

func TestReissueFailingPastTheOldTokenMarksTheCredentialLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second })
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
		f.wantLog("the old token ended before this credential could be re-issued")
		f.stop()
	})
}

// TestReissueRefusedOnceIsRetriedBeforeTheOldTokenEnds: a re-issue under
// the new token that Vault refuses once (an error retrying alone cannot
// fix) is tried again before the old token, and the credential with it,
// ends, not a flat 30s later.
func TestReissueRefusedOnceIsRetriedBeforeTheOldTokenEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second })
		f.start()
		time.Sleep(14 * time.Second)
		v.answer("database/creds/app", 400, "plugin error") // the re-issue after the login at 15s
		time.Sleep(1500 * time.Millisecond)
		v.answer("database/creds/app", 0, "")
		time.Sleep(22*time.Second - f.elapsed()) // the old token ended at 20s
		user, _ := f.creds("db")
		if code, _ := f.get("/readyz"); !v.aliveUser(user) || code != 200 {
			t.Errorf("at %s: file credential alive=%v, /readyz %d; want a credential issued under the new token before 20s", f.elapsed(), v.aliveUser(user), code)
		}
		f.wantLog("could not re-issue a credential under the new token")
		f.stop()
	})
}

// TestSlowLoginGetsThroughBeforeTheOldTokenEnds: a Vault whose login
// takes 2s (a TokenReview under load), asked 5s before the old token
// ends, is given the time to answer: one login, no token created for a
// client that gave up, and the credential re-issued before the old token
// ends.
func TestSlowLoginGetsThroughBeforeTheOldTokenEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 15*time.Second, 15*time.Second })
		v.mu.Lock()
		v.latency = 2 * time.Second
		v.mu.Unlock()
		f.start()
		time.Sleep(30 * time.Second)
		logins, _, _, _ := v.counts()
		if n := logins - 1 - int(f.metric("podlease_logins_total")); n > 0 {
			t.Errorf("%d tokens created by logins vault-renew gave up on", n)
		}
		if strings.Contains(f.logs.String(), "the token is no longer valid") {
			t.Errorf("the token expired before a 2s login got through\n%s", f.logs)
		}
		user, _ := f.creds("db")
		if code, _ := f.get("/readyz"); !v.aliveUser(user) || code != 200 {
			t.Errorf("file credential alive=%v, /readyz %d", v.aliveUser(user), code)
		}
		f.stop()
	})
}

// TestLoginThatTimesOutSaysSo: a login Vault does not answer in time is
// logged as a timeout, not as an unreachable Vault.
func TestLoginThatTimesOutSaysSo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 15*time.Second, 15*time.Second })
		v.mu.Lock()
		v.hang["auth/kubernetes/login"] = 1
		v.mu.Unlock()
		f.start()
		time.Sleep(16 * time.Second) // the login at 10s hangs for 4.5s; the retry gets through
		f.wantLog("login timed out: Vault did not answer in time")
		if strings.Contains(f.logs.String(), "is Vault reachable at this address?") {
			t.Errorf("a login that timed out is blamed on the address:\n%s", f.logs)
		}
		if st := f.state(); st.Token.Accessor == "accessor1" {
			t.Error("no new token after the retry")
		}
		f.checkNoSecretsLogged()
		f.stop()
	})
}

// TestReloginRevokesOldLeasesWithTheOldToken: after a new login the
// leases of the old token are retired with it: listed until the old
// token's revocation, which ends them in one request, with no revocation
// of their own. This holds only while commit switches the token before it
// applies the re-issued credentials.
func TestReloginRevokesOldLeasesWithTheOldToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := reloginFixture(t)
		old := f.state().Secrets[0].LeaseID
		time.Sleep(16 * time.Second) // the new login at 15s
		st := f.state()
		if st.Token.Accessor == "accessor1" || st.Secrets[0].LeaseID == old {
			t.Fatalf("no new login at 15s\nlogs:\n%s", f.logs)
		}
		if len(st.Retiring) != 1 || st.Retiring[0].LeaseID != old || !st.Retiring[0].RevokeAt.Equal(epoch.Add(19*time.Second)) {
			t.Fatalf("retiring = %+v; want the old lease, revoked with its token at 19s", st.Retiring)
		}
		f.appLoop(3500 * time.Millisecond) // 19.5s
		if v.alive(old) || v.tokenAlive("accessor1") {
			t.Errorf("at 19.5s the old lease (alive %v) or the old token (alive %v) is alive", v.alive(old), v.tokenAlive("accessor1"))
		}
		if r := f.state().Retiring; len(r) != 0 {
			t.Errorf("retiring = %+v after the old token's revocation; want none", r)
		}
		f.appLoop(40 * time.Second)
		if n := v.count("sys/leases/revoke"); n != 0 {
			t.Errorf("%d lease revocations; want none: the old token's revocation ends its leases", n)
		}
		f.stop()
	})
}

// TestTokenMaxTTLEqualToItsTTLIsWarnedAtStart: a token whose max TTL is its
// TTL, renewed within a second of its login, comes back with its full TTL,
// as a periodic token would; Vault's warning that it capped the TTL tells
// them apart, and the warning comes at start.
func TestTokenMaxTTLEqualToItsTTLIsWarnedAtStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 10*time.Second })
		f.start()
		time.Sleep(time.Second)
		f.wantLog("the token's max TTL is shorter than the leases it holds")
		f.stop()
	})
}

// TestHungLoginLeavesTimeForAnother: one login that never gets an answer
// (a node frozen mid-request), 5s before a 15s token ends, is given up on
// in time for a second login and the re-issue: the credential never dies
// with the old token.
func TestHungLoginLeavesTimeForAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 15*time.Second, 15*time.Second })
		v.mu.Lock()
		v.latency = 400 * time.Millisecond
		v.hang["auth/kubernetes/login"] = 1
		v.mu.Unlock()
		f.start()
		for _, at := range []time.Duration{12, 14, 16, 18} {
			time.Sleep(at*time.Second - f.elapsed())
			if user, _ := f.creds("db"); !v.aliveUser(user) {
				t.Errorf("at %s: the file's credential is dead", f.elapsed())
			}
		}
		// Before 15s, /readyz may answer 503: a credential that ends with
		// its token within the rotation window is in its final stretch.
		if code, _ := f.get("/readyz"); code != 200 {
			t.Errorf("at %s: /readyz %d after the new token's credential was written", f.elapsed(), code)
		}
		if strings.Contains(f.logs.String(), "the token is no longer valid") {
			t.Errorf("the old token ended before a second login got through:\n%s", f.logs)
		}
		f.wantLog("login timed out")
		f.stop()
	})
}

// TestRefusedLoginIsNotHurried: a login Vault refuses for good (a secret
// id that ran out, a role that no longer binds) is retried every 30s or
// so, also as the token's end nears: more tries cannot help, and some
// auth methods lock a role out after a few failed logins.
func TestRefusedLoginIsNotHurried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = time.Minute, 2*time.Minute })
		v.answer("auth/kubernetes/login", 400, "invalid role or secret ID")
		f.start()
		time.Sleep(150 * time.Second) // the token ended at 2m
		v.mu.Lock()
		logins := v.loginTries
		v.mu.Unlock()
		if logins == 0 {
			t.Fatal("no login tried")
		}
		// From the first try, up to a third of the TTL (40s) before the
		// end, to 150s: 70s.
		if logins > 4 {
			t.Errorf("%d refused logins in 70s; want one every 30s or so\nlogs:\n%s", logins, f.logs)
		}
		f.stop()
	})
}
