package renew

import (
	"testing"
	"testing/synctest"
	"time"
)

// reloginFixture is a pod whose token reaches its 20s max TTL: vault-renew
// logs in again at 15s and revokes the old token (accessor1) a second
// before it ends, at 19s.
func reloginFixture(t *testing.T, args ...string) (*fakeVault, *fixture) {
	t.Helper()
	v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second })
	f.start(args...)
	return v, f
}

// TestOldTokenRevocationFailures: a replaced token Vault will not revoke
// is retried until it ends by itself; one Vault calls invalid is already
// gone; one whose policy lacks revoke-self is left to end at its expiry,
// not tried again.
func TestOldTokenRevocationFailures(t *testing.T) {
	for _, tc := range []struct {
		name               string
		code               int
		msg                string
		log                string
		minTries, maxTries int // maxTries 0: no bound
	}{
		{"Vault keeps failing: retried until it expires", 503, "no", "revoking the old token failed; retrying", 2, 0},
		{"invalid: already gone", 403, invalidToken, "revoked the old token and the leases issued under it", 1, 1},
		{"refused by its policy: left to its expiry", 403, "1 error occurred:\n\t* permission denied\n\n", "cannot revoke the old token: its policy does not allow auth/token/revoke-self", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := reloginFixture(t)
				time.Sleep(16 * time.Second)
				v.answer("auth/token/revoke-self", tc.code, tc.msg)
				f.appLoop(8 * time.Second) // 24s: the old token ended at 20s
				f.wantLog(tc.log)
				if n := v.count("auth/token/revoke-self"); n < tc.minTries || tc.maxTries > 0 && n > tc.maxTries {
					t.Errorf("%d revocations of the old token; want %d to %d", n, tc.minTries, tc.maxTries)
				}
				if r := f.state().Retiring; len(r) != 0 {
					t.Errorf("state.json retiring = %+v once the old token ended; want none", r)
				}
				f.stop()
			})
		})
	}
}

// TestOldTokensAreRevokedWhenThePodEnds: a replaced token in its grace
// period is known only to vault-renew; it is revoked on SIGTERM with
// --revoke-on-exit, and when vault-revoke ran. A revocation on exit that
// gets no answer is cut after a third of --revoke-timeout and sent again:
// it does not spend the time the others need.
func TestOldTokensAreRevokedWhenThePodEnds(t *testing.T) {
	stop := func(f *fixture) {
		began := time.Now()
		f.stop()
		if took := time.Since(began); took > 10*time.Second {
			t.Errorf("exit took %s; --revoke-timeout is 10s", took)
		}
	}
	for _, tc := range []struct {
		name       string
		unanswered string // the path of a request that gets no answer, once
		end        func(f *fixture)
	}{
		{"--revoke-on-exit", "", stop},
		{"--revoke-on-exit, a token revocation unanswered", "auth/token/revoke-self", stop},
		{"--revoke-on-exit, a lease revocation unanswered", "sys/leases/revoke", stop},
		{"vault-revoke", "", func(f *fixture) {
			markRevoked(f.t, f.stateDir)
			time.Sleep(3500 * time.Millisecond) // noticed at the next action, 19s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := reloginFixture(t, "--revoke-on-exit", "--grace", "1m")
				time.Sleep(16 * time.Second)
				if !v.tokenAlive("accessor1") {
					t.Fatal("the old token was revoked before its grace period ended")
				}
				if tc.unanswered != "" {
					v.mu.Lock()
					v.hang[tc.unanswered] = 1
					v.mu.Unlock()
				}
				tc.end(f)
				if v.tokenAlive("accessor1") {
					t.Errorf("the old token outlived the pod\nlogs:\n%s", f.logs)
				}
				f.wantLog("revoked an old token and the leases issued under it")
				f.stop()
				// The current token goes too, through the sidecar's own
				// client (no second client dialling the state's address).
				var alive []string
				v.mu.Lock()
				for _, tok := range v.tokens {
					if tok.accessor != "accessor1" && !tok.revoked {
						alive = append(alive, tok.accessor)
					}
				}
				v.mu.Unlock()
				if tc.name != "vault-revoke" && len(alive) > 0 {
					t.Errorf("tokens alive after the pod ended: %v\nlogs:\n%s", alive, f.logs)
				}
			})
		})
	}
}
