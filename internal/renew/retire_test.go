package renew

import (
	"cmp"
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
// the old lease's max TTL).
func TestReplacedLeaseRevocationFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		code       int
		msg        string
		healAt     time.Duration // Vault answers normally again (0: never)
		log        string
		listed     bool // still listed in state.json at 25s, for vault-revoke
		maxRevokes int
		grace      string // --grace; 3s unless set: revoked before the lease ends at 20s
		absent     string // a log line that must not appear
	}{
		{name: "permission denied: parked for vault-revoke, no more tries", code: 403, msg: "permission denied", log: "permission denied revoking the replaced lease", listed: true, maxRevokes: 1},
		{name: "already gone: dropped", code: 400, msg: "invalid lease", log: "the replaced lease is already gone", maxRevokes: 1},
		{name: "Vault keeps failing: retried until the lease ends, then parked", code: 503, msg: "unavailable", log: "giving up revoking the replaced lease", listed: true, maxRevokes: 20},
		{name: "Vault fails once: revoked on a retry", code: 503, msg: "unavailable", healAt: 18500 * time.Millisecond, log: "revoked the replaced lease", maxRevokes: 20},
		{name: "revoked at its end, when Vault fails: parked, no more tries, no warning", code: 503, msg: "unavailable", grace: "30s", log: "level=INFO msg=\"the replaced lease has ended, and Vault ends it by itself", absent: "giving up", listed: true, maxRevokes: 1},
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
				time.Sleep(25*time.Second - time.Since(epoch))
				f.wantLog(tc.log)
				if tc.absent != "" && strings.Contains(f.logs.String(), tc.absent) {
					t.Errorf("log line %q where none should be:\n%s", tc.absent, f.logs)
				}
				r := f.state().Retiring
				if listed := len(r) == 1 && r[0].LeaseID == old; listed != tc.listed {
					t.Errorf("state.json retiring = %+v; want the old lease listed: %v", r, tc.listed)
				}
				if n := v.count("sys/leases/revoke"); n < 1 || n > tc.maxRevokes {
					t.Errorf("%d revocation requests; want 1 to %d", n, tc.maxRevokes)
				}
				f.stop()
			})
		})
	}
}
