package renew

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestVerifyIntervalNoticesARevokedLease: an operator revokes the lease an
// hour before its renewal. With --verify-interval 10s, /readyz turns 503
// within 10 s, naming the secret, and stays so while no new credential can
// be issued; then the credential is replaced. Without the flag /readyz
// says ready all along (the limit the docs state).
func TestVerifyIntervalNoticesARevokedLease(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		wantReady int
	}{
		{"with --verify-interval 10s", []string{"--verify-interval", "10s"}, 503},
		{"without", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, nil)
				lease := f.state().Secrets[0].LeaseID
				f.start(tc.args...)
				time.Sleep(2 * time.Second)
				v.setFailCreds(true)
				v.mu.Lock()
				v.leases[lease].revoked = true // vault lease revoke
				v.mu.Unlock()
				time.Sleep(10 * time.Second)
				code, body := f.get("/readyz")
				if code != tc.wantReady {
					t.Fatalf("/readyz 10 s after the lease was revoked = %d %q; want %d", code, body, tc.wantReady)
				}
				if code == 503 && !strings.Contains(body, "db") {
					t.Errorf("/readyz = %q; want it to name the secret", body)
				}
				if tc.args == nil {
					f.stop()
					return
				}
				v.setFailCreds(false)
				time.Sleep(40 * time.Second) // the rotation's backoff
				if code, body := f.get("/readyz"); code != 200 {
					t.Errorf("/readyz after Vault issues again = %d %q; want 200", code, body)
				}
				if user, _ := f.creds("db"); !v.aliveUser(user) {
					t.Error("the file does not hold a working credential")
				}
				f.stop()
			})
		})
	}
}

// TestVerifyIntervalCost: what --verify-interval costs Vault, per interval
// and per pod: one lookup-self and one sys/leases/lookup per leased
// secret, nothing else.
func TestVerifyIntervalCost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		f := newFixture(t, v, dbSpec, spec{name: "db2", path: "database/creds/other", format: "json"})
		f.start("--verify-interval", "1m")
		time.Sleep(30 * time.Second) // past the token lookup and renewal at start
		v.mu.Lock()
		before := v.requests
		v.mu.Unlock()
		time.Sleep(10 * time.Minute) // 10 checks, no renewal due (1 h leases)
		v.mu.Lock()
		got := v.requests - before
		v.mu.Unlock()
		if want := 10 * (1 + 2); got != want {
			t.Errorf("Vault requests in 10 intervals with 2 leased secrets = %d; want %d (1 + 2 per interval)", got, want)
		}
		t.Logf("MEASURED --verify-interval cost: %d requests in 10 intervals, 2 leased secrets: %d per interval", got, got/10)
		f.stop()
	})
}
