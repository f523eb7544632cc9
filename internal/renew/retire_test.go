package renew

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

func TestRetiringLeasesFromAnEarlierRunAreRevoked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		f := newFixture(t, v, dbSpec)
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
