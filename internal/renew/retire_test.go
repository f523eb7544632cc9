package renew

import (
	"cmp"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

func TestRetiringLeasesFromAnEarlierRunAreRevoked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, nil)
		// A lease an earlier vault-renew replaced, due for revocation
		// before it crashed, and one still in its grace period.
		st := f.state()
		c, _ := v.newClient("", "", time.Second, nil)
		tok, _ := state.ReadToken(f.stateDir)
		c.SetToken(tok)
		var ids []string
		for range 2 {
			s, err := c.Logical().Read("database/creds/app")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, s.LeaseID)
		}
		st.Retiring = []state.Retiring{
			{Secret: "db", LeaseID: ids[0], RevokeAt: time.Now().Add(-time.Second)},
			{Secret: "db", LeaseID: ids[1], RevokeAt: time.Now().Add(10 * time.Second)},
		}
		if err := state.Save(f.stateDir, st); err != nil {
			t.Fatal(err)
		}
		f.start()
		time.Sleep(time.Second)
		if v.alive(ids[0]) || !v.alive(ids[1]) {
			t.Fatalf("after start: overdue lease alive=%v (want false), lease in grace alive=%v (want true)", v.alive(ids[0]), v.alive(ids[1]))
		}
		time.Sleep(10 * time.Second)
		if v.alive(ids[1]) {
			t.Error("the second lease was not revoked at its revoke_at")
		}
		if r := f.state().Retiring; len(r) != 0 {
			t.Errorf("retiring = %+v; want none", r)
		}
		f.stop()
	})
}

// TestReplacedLeaseRevocationFailures: what vault-renew does when Vault
// will not revoke a replaced lease (15s: replaced; 18s: grace over; 20s:
// the old lease's max TTL). A lease it could not revoke stays listed in
// state.json for vault-revoke until it ends, and no longer once Vault has
// ended it.
func TestReplacedLeaseRevocationFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		code       int
		msg        string
		healAt     time.Duration // Vault answers normally again (0: never)
		log        string
		listed     bool // still listed in state.json at 19s, for vault-revoke
		check19    bool // whether to check listed
		maxRevokes int
		grace      string // --grace; 3s unless set: revoked before the lease ends at 20s
		absent     string // a log line that must not appear
	}{
		{name: "permission denied: listed for vault-revoke until it ends, no more tries", code: 403, msg: "permission denied", log: "permission denied revoking the replaced lease", listed: true, check19: true, maxRevokes: 1},
		{name: "already gone: dropped", code: 400, msg: "invalid lease", log: "the replaced lease is already gone", check19: true, maxRevokes: 1},
		{name: "Vault keeps failing: retried until the lease ends, then dropped", code: 503, msg: "unavailable", log: "revoking the replaced lease kept failing until it ended", listed: true, check19: true, maxRevokes: 20},
		{name: "Vault fails once: revoked on a retry", code: 503, msg: "unavailable", healAt: 18500 * time.Millisecond, log: "revoked the replaced lease", maxRevokes: 20},
		{name: "revoked at its end, when Vault fails: dropped, no warning", code: 503, msg: "unavailable", grace: "30s", log: "level=INFO msg=\"the replaced lease has ended, and Vault ended it by itself", absent: "level=WARN", listed: true, check19: true, maxRevokes: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				grace := cmp.Or(tc.grace, "3s")
				v, f := rotatingFixture(t, "--grace", grace)
				old := f.state().Secrets[0].LeaseID
				v.answer("sys/leases/revoke", tc.code, tc.msg)
				if tc.healAt > 0 {
					time.Sleep(tc.healAt)
					v.answer("sys/leases/revoke", 0, "")
				}
				time.Sleep(19*time.Second - time.Since(epoch))
				r := f.state().Retiring
				if listed := len(r) == 1 && r[0].LeaseID == old; tc.check19 && listed != tc.listed {
					t.Errorf("at 19s state.json retiring = %+v; want the old lease listed: %v", r, tc.listed)
				}
				time.Sleep(25*time.Second - time.Since(epoch))
				f.wantLog(tc.log)
				if tc.absent != "" && strings.Contains(f.logs.String(), tc.absent) {
					t.Errorf("log line %q where none should be:\n%s", tc.absent, f.logs)
				}
				if r := f.state().Retiring; len(r) != 0 {
					t.Errorf("at 25s state.json retiring = %+v; want none: the old lease ended at 20s", r)
				}
				if n := v.count("sys/leases/revoke"); n < 1 || n > tc.maxRevokes {
					t.Errorf("%d revocation requests; want 1 to %d", n, tc.maxRevokes)
				}
				f.stop()
			})
		})
	}
}

// TestReplacedLeasesVaultWillNotRevokeDoNotPileUp: without
// sys/leases/revoke in the policy, every rotation leaves a lease that
// cannot be revoked; each is listed only until it ends.
func TestReplacedLeasesVaultWillNotRevokeDoNotPileUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := rotatingFixture(t, "--grace", "3s")
		v.answer("sys/leases/revoke", 403, "permission denied")
		time.Sleep(10 * time.Minute)
		_, issued, _, _ := v.counts()
		if r := f.state().Retiring; issued < 30 || len(r) > 1 {
			t.Errorf("after 10 min and %d leases issued, state.json lists %d replaced leases; want at most the one not yet ended (max TTL 20s)", issued, len(r))
		}
		f.stop()
	})
}

// TestParkedLeasesOfUnknownExpiryAreBounded: leases read back from
// state.json have no known expiry; those Vault will not revoke stay
// listed, but no more than maxParked, the newest.
func TestParkedLeasesOfUnknownExpiryAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, nil)
		st := f.state()
		for i := range maxParked + 5 {
			st.Retiring = append(st.Retiring, state.Retiring{Secret: "db", LeaseID: fmt.Sprintf("database/creds/app/old%d", i), RevokeAt: epoch.Add(time.Duration(i-100) * time.Second)})
		}
		if err := state.Save(f.stateDir, st); err != nil {
			t.Fatal(err)
		}
		v.answer("sys/leases/revoke", 403, "permission denied")
		f.start()
		time.Sleep(time.Second)
		r := f.state().Retiring
		if len(r) != maxParked || r[0].LeaseID != "database/creds/app/old5" {
			t.Errorf("state.json lists %d replaced leases from %+v; want the newest %d", len(r), r[0], maxParked)
		}
		f.stop()
	})
}

// TestRefusedRevocationOfAReplacedLeaseNoticesADeadToken: Vault refuses
// every request of a token revoked by hand as "invalid token", the
// revocation of a replaced lease too: the token is replaced at once,
// rather than the policy blamed until the next renewal.
func TestRefusedRevocationOfAReplacedLeaseNoticesADeadToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := rotatingFixture(t, "--grace", "3s")
		acc := f.state().Token.Accessor
		time.Sleep(16500 * time.Millisecond) // replaced at 15s; revoked at 18s
		v.revokeToken(acc)
		time.Sleep(18500*time.Millisecond - f.elapsed())
		if f.state().Token.Accessor == acc {
			t.Error("still on the revoked token after a refused revocation at 18s")
		}
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Error("the file does not hold a working credential")
		}
		f.stop()
	})
}

// TestPolicyWithoutLeaseRevokeCostsNoTokenRequest: a policy without
// sys/leases/revoke refuses the revocation of every replaced lease with a
// plain "permission denied"; that costs no request on the token: as many
// token renewals in 10 minutes of rotations as with the revocations
// allowed.
func TestPolicyWithoutLeaseRevokeCostsNoTokenRequest(t *testing.T) {
	renewals := map[bool]int{}
	for _, refused := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			v, f := rotatingFixture(t, "--grace", "3s")
			if refused {
				v.answer("sys/leases/revoke", 403, "1 error occurred:\n\t* permission denied\n\n")
			}
			time.Sleep(10 * time.Minute)
			renewals[refused] = v.count("auth/token/renew-self") + v.count("auth/token/lookup-self")
			f.stop()
		})
	}
	if renewals[true] != renewals[false] {
		t.Errorf("token requests in 10 minutes: %d with revocations refused, %d allowed; want the same", renewals[true], renewals[false])
	}
}
