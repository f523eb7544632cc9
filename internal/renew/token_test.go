package renew

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

func TestPeriodicTokenIsRenewedForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenPeriod = 10*time.Second, 10*time.Second })
		acc := f.state().Token.Accessor
		f.start()
		f.appLoop(60 * time.Second)
		if st := f.state(); st.Token.Accessor != acc {
			t.Error("logged in again although a periodic token can be renewed forever")
		}
		if logins, _, _, renewals := v.counts(); logins != 1 || renewals < 8 {
			t.Errorf("%d logins, %d token renewals in 60s; want vault-init's login and a renewal every ~7.3s", logins, renewals)
		}
		if strings.Contains(f.logs.String(), "max TTL") {
			t.Errorf("the logs speak of a max TTL for a periodic token:\n%s", f.logs)
		}
		f.stop()
	})
}

func TestRevokedTokenLogsInAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		acc := f.state().Token.Accessor
		f.start()
		time.Sleep(2 * time.Second)
		v.revokeToken(acc)          // its lease goes with it
		time.Sleep(6 * time.Second) // the lease renewal at 7.3s is refused
		st := f.state()
		if st.Token.Accessor == acc {
			t.Fatal("still on the revoked token")
		}
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Fatal("the file does not hold a working credential")
		}
		if len(st.Retiring) != 0 {
			t.Errorf("retiring = %+v; the revoked token's lease needs no revocation", st.Retiring)
		}
		f.stop()
	})
}

// TestTokenID: tokens are told apart by accessor; batch tokens have none,
// and their id must differ per token and reveal nothing of it.
func TestTokenID(t *testing.T) {
	t.Parallel()
	const a, b = "hvb.AAAAAQJfirst-batch-token-text", "hvb.AAAAAQJsecond-batch-token-text"
	if got := tokenID("acc-1", a); got != "acc-1" {
		t.Errorf("service token id = %q; want its accessor", got)
	}
	ida, idb := tokenID("", a), tokenID("", b)
	if ida == idb || ida == "" {
		t.Errorf("batch token ids %q and %q; want distinct", ida, idb)
	}
	if ida != tokenID("", a) {
		t.Error("a batch token's id is not stable")
	}
	for _, id := range []string{ida, idb} {
		if !strings.HasPrefix(id, "batch-") || strings.Contains(a, id[6:]) || strings.Contains(b, id[6:]) {
			t.Errorf("batch token id %q: want batch-HASH, nothing of the token", id)
		}
	}
}

// TestTokenFailures: what vault-renew does when Vault fails a lookup or
// a renewal of the token; the credential in the file works throughout.
func TestTokenFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		path   string
		code   int
		msg    string
		healAt time.Duration
		args   []string
		log    string
		logins int // by vault-renew
	}{
		{name: "Vault fails at start: renewed on the schedule from state.json", path: "auth/token/renew-self", code: 503, msg: "unavailable", healAt: time.Second,
			log: "token renewal failed; retrying"},
		{name: "refused at start: logs in, even with --exit-on-failure", path: "auth/token/renew-self", code: 403, msg: invalidToken, healAt: time.Second,
			args: []string{"--exit-on-failure"}, log: "the token is no longer valid: Vault refused to renew it", logins: 1},
		// A token whose policy lacks renew-self lives to its expiry.
		{name: "renewal refused by the policy: logs in before it expires", path: "auth/token/renew-self", code: 403, msg: "1 error occurred:\n\t* permission denied\n\n",
			args: []string{"--exit-on-failure"}, log: "Vault will not renew the token; logging in again before it expires", logins: 2},
		{name: "renewal fails: retried", path: "auth/token/renew-self", code: 503, msg: "unavailable", healAt: 20 * time.Second,
			log: "token renewal failed; retrying"},
		{name: "not renewable: logs in before it expires", path: "auth/token/renew-self", code: 400, msg: "token not renewable",
			log: "Vault will not renew the token; logging in again before it expires", logins: 2}, // at 20s and 40s: no token renews
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL = 30 * time.Second })
				v.answer(tc.path, tc.code, tc.msg)
				f.start(tc.args...)
				if tc.healAt > 0 {
					f.appLoop(tc.healAt)
					v.answer(tc.path, 0, "")
				}
				f.appLoop(50*time.Second - time.Since(epoch))
				f.wantLog(tc.log)
				if logins, _, _, _ := v.counts(); logins-1 != tc.logins {
					t.Errorf("%d logins by vault-renew; want %d", logins-1, tc.logins)
				}
				if code := f.stop(); code != 0 {
					t.Errorf("exit code %d; want 0", code)
				}
			})
		})
	}
}

// TestStartCostsOneRequest: vault-renew's start costs Vault one request:
// state.json has the token's TTL and the leases', so a renewable token is
// renewed (which checks it and reveals a max TTL shorter than the
// leases), and one that cannot be renewed is looked up. Nothing else is
// asked until the first renewal falls due.
func TestStartCostsOneRequest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		renewable bool
		want      string
	}{
		{"renewable token: one renewal", true, "auth/token/renew-self"},
		{"token that cannot be renewed: one lookup", false, "auth/token/lookup-self"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, nil)
				st := f.state()
				st.Token.Renewable = tc.renewable
				if err := state.Save(f.stateDir, st); err != nil {
					t.Fatal(err)
				}
				v.mu.Lock()
				before := v.requests
				v.mu.Unlock()
				f.start()
				time.Sleep(30 * time.Minute) // renewals are due at 0.7 of the 1h TTLs
				v.mu.Lock()
				n, asked := v.requests-before, v.asked[tc.want]
				v.mu.Unlock()
				if n != 1 || asked != 1 {
					t.Errorf("%d requests in the first 30 minutes, %d of them %s; want just that one\nlogs:\n%s", n, asked, tc.want, f.logs)
				}
				if code, _ := f.get("/readyz"); code != 200 {
					t.Errorf("/readyz = %d; want 200", code)
				}
				f.stop()
			})
		})
	}
}

// TestRevokedTokenIsNoticedWhenItsNextActionIsALogin: once the token's
// max TTL is known, its next action is a login, not a renewal. A token
// revoked by hand (its leases go with it) is then found out by the next
// lease renewal, which Vault refuses as "invalid token": the login and
// the re-issue follow at once, not at the scheduled login.
func TestRevokedTokenIsNoticedWhenItsNextActionIsALogin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) {
			v.tokenTTL, v.tokenMax = 300*time.Second, 400*time.Second
			v.leaseTTL, v.leaseMax = 60*time.Second, time.Hour
		})
		f.start()
		time.Sleep(225 * time.Second) // token renewed at ~218s, capped: login due at 300s
		acc := f.state().Token.Accessor
		v.revokeToken(acc)
		// The lease renewal at ~262s is refused.
		for _, at := range []time.Duration{265, 280, 295} {
			time.Sleep(at*time.Second - f.elapsed())
			user, _ := f.creds("db")
			code, _ := f.get("/readyz")
			if !v.aliveUser(user) || code != 200 {
				t.Errorf("at %s (token revoked at 225s, lease renewal refused at ~262s): file credential alive=%v, /readyz %d", f.elapsed(), v.aliveUser(user), code)
			}
		}
		if st := f.state(); st.Token.Accessor == acc {
			t.Error("still on the revoked token")
		}
		f.wantLog("the token is no longer valid: Vault refused a request made with it")
		f.stop()
	})
}

// TestRefusedLeaseRenewalWithALiveTokenDoesNotLogIn: a policy without
// sys/leases/renew refuses every lease renewal while the token is fine,
// with a plain "permission denied". That costs no request on the token,
// let alone a login and a re-issue of every credential.
func TestRefusedLeaseRenewalWithALiveTokenDoesNotLogIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) {
			v.tokenTTL, v.tokenMax = 300*time.Second, 400*time.Second
			v.leaseTTL, v.leaseMax = 60*time.Second, time.Hour
		})
		f.start()
		time.Sleep(225 * time.Second) // the token's next action is the login at 300s
		v.mu.Lock()
		v.denyLeaseRenew = true
		v.mu.Unlock()
		lookups, renewals := v.count("auth/token/lookup-self"), v.count("auth/token/renew-self")
		time.Sleep(295*time.Second - f.elapsed())
		if logins, _, _, _ := v.counts(); logins != 1 {
			t.Errorf("%d logins by 295s; want only vault-init's (the token is fine, the policy refuses lease renewals)", logins)
		}
		if n := v.count("auth/token/lookup-self") - lookups + v.count("auth/token/renew-self") - renewals; n > 0 {
			t.Errorf("%d token requests after refused lease renewals; want none", n)
		}
		user, _ := f.creds("db")
		if code, _ := f.get("/readyz"); !v.aliveUser(user) || code != 200 {
			t.Errorf("file credential alive=%v, /readyz %d", v.aliveUser(user), code)
		}
		f.wantLog("permission denied renewing the lease: the policy must allow update on sys/leases/renew")
		f.stop()
	})
}
