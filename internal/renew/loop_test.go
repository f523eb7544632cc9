package renew

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

// TestLeaseThatLooksExpiredAtStartIsRetiredNotDropped: after the wall clock
// jumped past expires_at, the lease in state.json may be alive in Vault:
// the new credential replaces it, and the old lease stays listed until it
// is revoked. The token is judged by Vault's lookup, not by the clock.
func TestLeaseThatLooksExpiredAtStartIsRetiredNotDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = time.Hour })
		st := f.state()
		old, acc := st.Secrets[0].LeaseID, st.Token.Accessor
		jumped := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
		st.Secrets[0].ExpiresAt = jumped
		st.Token.ExpiresAt = jumped
		if err := state.Save(f.stateDir, st); err != nil {
			t.Fatal(err)
		}
		f.start("--grace", "10s")
		time.Sleep(time.Second)
		st = f.state()
		if st.Token.Accessor != acc {
			t.Errorf("logged in again because the token looked expired by the clock; Vault's lookup says it lives")
		}
		if st.Secrets[0].LeaseID == old {
			t.Fatal("the lease that looked expired was kept without a new credential")
		}
		if !listed(st, old) {
			t.Errorf("the replaced lease %s is alive in Vault (%v) and listed nowhere in state.json", old, v.alive(old))
		}
		time.Sleep(10 * time.Second)
		if v.alive(old) {
			t.Error("the replaced lease was not revoked after the grace period")
		}
		if st := f.state(); listed(st, old) {
			t.Errorf("the revoked lease is still listed: %+v", st.Retiring)
		}
		f.stop()
	})
}

func listed(st *state.State, lease string) bool {
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

// TestRestartBeforeAReissueIssuesUnderTheCurrentToken: a sidecar
// restarted while a lease still belongs to the token a login replaced
// (its re-issue under the new token had failed so far) issues a new
// credential at once: the old token, which only the previous run held,
// ends with that lease.
// TestRestartBeforeAReissueIssuesUnderTheCurrentToken: a sidecar that
// restarts after a login whose re-issue failed finds a lease issued
// under the token before the one in the token file; it issues a new
// credential at once, and, when the current token is dead too, after the
// login that replaces it.
func TestRestartBeforeAReissueIssuesUnderTheCurrentToken(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tokenDead bool
	}{{"current token alive", false}, {"current token revoked", true}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second })
				v.mu.Lock()
				v.latency = 50 * time.Millisecond // lets the login and the read interleave
				v.mu.Unlock()
				f.start()
				time.Sleep(14 * time.Second)
				v.answer("database/creds/app", 400, "plugin error")
				time.Sleep(2 * time.Second)
				v.answer("database/creds/app", 0, "")
				f.stop()
				if tc.tokenDead {
					v.revokeToken(f.state().Token.Accessor)
				}
				f.exited = false
				f.start()
				for _, at := range []time.Duration{23, 30, 40} {
					time.Sleep(at*time.Second - f.elapsed())
					user, _ := f.creds("db")
					if code, _ := f.get("/readyz"); !v.aliveUser(user) || code != 200 {
						t.Errorf("at %s: file credential alive=%v, /readyz %d; want a credential of the current token", f.elapsed(), v.aliveUser(user), code)
					}
				}
				f.wantLog("lease issued under an earlier token than the one in the token file")
				f.stop()
			})
		})
	}
}
