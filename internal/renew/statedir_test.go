package renew

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

// The state dir as an attacker or a hurried operator leaves it: a second
// sidecar, a clock that jumped, state.json renamed, deleted or corrupted.

// TestSecondSidecarOnOneStateDirExits: two sidecars on one state dir would
// both rotate the same leases; the second one exits at once, saying why.
func TestSecondSidecarOnOneStateDirExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 20 * time.Second
		f := newFixture(t, v, dbSpec)
		f.start()
		time.Sleep(time.Second)

		second := &fixture{t: t, v: v, dir: f.dir, stateDir: f.stateDir, secretsDir: f.secretsDir, logs: &syncBuffer{}, procRoot: f.procRoot}
		second.start()
		time.Sleep(time.Second)
		if second.running() {
			t.Fatal("a second vault-renew on the same state dir is still running")
		}
		if code := second.wait(); code != 1 {
			t.Errorf("second vault-renew exit code %d; want 1", code)
		}
		if logs := second.logs.String(); !strings.Contains(logs, "another vault-renew is running") || !strings.Contains(logs, "(pid ") {
			t.Errorf("the second vault-renew's message does not say another one holds the state dir:\n%s", logs)
		}
		_, issued0, _, _ := v.counts()
		time.Sleep(60 * time.Second) // rotations of the first sidecar only
		st := f.state()
		if !v.alive(st.Secrets[0].LeaseID) {
			t.Error("the first sidecar's credential died")
		}
		if _, issued, _, _ := v.counts(); issued-issued0 > 3 {
			t.Errorf("%d credentials issued in 60s of a 20s lease; want one sidecar's rotations", issued-issued0)
		}
		f.stop()
	})
}

// TestLeaseThatLooksExpiredAtStartIsRetiredNotDropped: after the wall clock
// jumped past expires_at, the lease in state.json may be alive in Vault:
// the new credential replaces it, and the old lease stays listed until it
// is revoked. The token is judged by Vault's lookup, not by the clock.
func TestLeaseThatLooksExpiredAtStartIsRetiredNotDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = time.Hour
		f := newFixture(t, v, dbSpec)
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

// damages are what can happen to the state dir under a running sidecar.
var damages = []struct {
	name string
	do   func(dir string) error
}{
	{"state.json renamed away", func(dir string) error {
		return os.Rename(filepath.Join(dir, state.FileName), filepath.Join(dir, "moved.json"))
	}},
	{"state.json deleted", func(dir string) error { return os.Remove(filepath.Join(dir, state.FileName)) }},
	{"state.json corrupt", func(dir string) error {
		return os.WriteFile(filepath.Join(dir, state.FileName), []byte("{garbage"), 0o600)
	}},
	{"token and state.json deleted", func(dir string) error {
		if err := os.Remove(filepath.Join(dir, state.TokenName)); err != nil {
			return err
		}
		return os.Remove(filepath.Join(dir, state.FileName))
	}},
}

// TestRevokeOnExitWithoutAReadableState: the sidecar holds the state in
// memory; on SIGTERM with --revoke-on-exit it revokes what it holds,
// whatever the disk says. Without a watch the damage is not even seen
// before SIGTERM.
func TestRevokeOnExitWithoutAReadableState(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f, _ := realFixtureWatch(t, false, "--revoke-on-exit")
			v, st := f.v, f.state()
			if err := d.do(f.stateDir); err != nil {
				t.Fatal(err)
			}
			f.exitsPromptly()
			if v.alive(st.Secrets[0].LeaseID) || v.tokenAlive(st.Token.Accessor) {
				t.Errorf("--revoke-on-exit left the lease (alive %v) or the token (alive %v)\nlogs:\n%s", v.alive(st.Secrets[0].LeaseID), v.tokenAlive(st.Token.Accessor), f.logs)
			}
			if _, err := os.Stat(filepath.Join(f.secretsDir, "db")); !os.IsNotExist(err) {
				t.Errorf("--revoke-on-exit left the secret file: %v", err)
			}
			if after, err := state.Load(f.stateDir); err != nil || after.RevokedAt == nil {
				t.Errorf("state.json does not record the revocation (%v)", err)
			}
			if logs := f.logs.String(); strings.Contains(logs, "nothing to revoke") {
				t.Errorf("the sidecar said there was nothing to revoke:\n%s", logs)
			}
		})
	}
}

// TestDamagedStateIsNotARevocation: with the inotify watch, a state.json
// that is renamed away, deleted or corrupted wakes the sidecar, which keeps
// renewing and writes the state again from memory; only revoked_at stops
// it.
func TestDamagedStateIsNotARevocation(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f, url := realFixture(t)
			lease := f.state().Secrets[0].LeaseID
			if err := d.do(f.stateDir); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, func() bool {
				st, err := state.Load(f.stateDir)
				_, terr := state.ReadToken(f.stateDir)
				return err == nil && st.Secrets[0].LeaseID == lease && st.RevokedAt == nil && terr == nil
			})
			if logs := f.logs.String(); strings.Contains(logs, "vault-revoke ran") {
				t.Errorf("the sidecar took a damaged state.json for a revocation:\n%s", logs)
			}
			if code, _ := httpGet(url + "/readyz"); code != 200 {
				t.Errorf("/readyz = %d after the damage; want 200", code)
			}
			if !f.running() {
				t.Fatal("vault-renew exited")
			}
		})
	}
}

// TestRevokeAfterGrace: when a replaced lease is revoked.
func TestRevokeAfterGrace(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	grace := 30 * time.Second
	for _, tc := range []struct {
		name   string
		expiry time.Time
		want   time.Time
	}{
		{"long-lived: after the grace period", now.Add(time.Hour), now.Add(grace)},
		{"ends within the grace period: a second before", now.Add(10 * time.Second), now.Add(9 * time.Second)},
		{"ends in under a second: now", now.Add(500 * time.Millisecond), now},
		{"unknown end: after the grace period", time.Time{}, now.Add(grace)},
		{"looks expired (the clock may be wrong): after the grace period", now.Add(-time.Minute), now.Add(grace)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := revokeAfterGrace(now, tc.expiry, grace); !got.Equal(tc.want) {
				t.Errorf("revokeAfterGrace = %s; want %s", got, tc.want)
			}
		})
	}
}

// TestWatchSeesStateRenamedAway: renaming state.json to another name in
// the state dir is an IN_MOVED_FROM of state.json (and an IN_MOVED_TO of
// the other name); the watch must wake the loop for it.
func TestWatchSeesStateRenamedAway(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, state.FileName), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	wake, stop := watchState(dir, newTestLogger(&syncBuffer{}))
	defer stop()
	if wake == nil {
		t.Fatal("no inotify here")
	}
	if err := os.Rename(filepath.Join(dir, state.FileName), filepath.Join(dir, "elsewhere.json")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(2 * time.Second):
		t.Fatal("renaming state.json away did not wake the loop")
	}
}
