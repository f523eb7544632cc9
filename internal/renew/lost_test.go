package renew

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestRetryAfterLossIsShortAndBounded: once a credential is lost the waits
// between attempts start again from the shortest and stay under
// lostRetryCap plus its jitter; before that they grow to the usual 10s
// (±50%); an error no retry fixes still waits permanentRetry.
func TestRetryAfterLossIsShortAndBounded(t *testing.T) {
	for _, tc := range []struct {
		name            string
		permanent, lost bool
		shortest        time.Duration // no wait is shorter
		longest         time.Duration // no wait is longer
		reach           time.Duration // some wait is at least this long
	}{
		{"renewing", false, false, 125 * time.Millisecond, 15 * time.Second, 5 * time.Second},
		{"lost", false, true, 125 * time.Millisecond, 3 * time.Second, time.Second},
		{"lost, permanent", true, true, permanentRetry, 3 * permanentRetry / 2, permanentRetry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r retry
			var waits []time.Duration
			var longest time.Duration
			for range 40 {
				w := r.after(tc.permanent, tc.lost)
				waits = append(waits, w)
				longest = max(longest, w)
				if w < tc.shortest || w > tc.longest {
					t.Fatalf("wait %s after %d failures; want between %s and %s", w, r.fails, tc.shortest, tc.longest)
				}
			}
			if longest < tc.reach {
				t.Errorf("longest wait %s; want the backoff to reach %s", longest, tc.reach)
			}
			if !tc.permanent && waits[0] > 375*time.Millisecond {
				t.Errorf("first wait %s; want the shortest (250ms ±50%%)", waits[0])
			}
		})
	}
	// A credential lost after a long outage starts again from the shortest
	// wait, not from where the renewal's backoff had grown to.
	var r retry
	for range 10 {
		r.after(false, false)
	}
	if w := r.after(false, true); w > 375*time.Millisecond {
		t.Errorf("first wait after the loss %s; want the shortest (250ms ±50%%)", w)
	}
}

// TestLostCredentialIsReplacedSoonAfterVaultReturns: Vault is down for
// 25s, so a 10s lease is lost; once Vault answers, a new credential is in
// the file within a few seconds, not after a backoff grown during the
// outage; and the retries in between say that the old lease expired.
func TestLostCredentialIsReplacedSoonAfterVaultReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		f.start()
		time.Sleep(5 * time.Second)
		v.setDown(true)
		time.Sleep(25 * time.Second) // the lease ended at 10s
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

func TestLifeLeft(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		expiry time.Time
		gone   bool
		want   string
	}{
		{"no expiry", time.Time{}, false, "never"},
		{"alive", now.Add(6100 * time.Millisecond), false, "6.1s"},
		{"expired", now.Add(-3 * time.Second), true, "expired 3s ago"},
		{"expired, not yet marked", now.Add(-time.Second), false, "expired 1s ago"},
		{"expires now", now, false, "expired 0s ago"},
		{"refused before its expiry", now.Add(time.Minute), true, "gone"},
		{"gone, expiry unknown", time.Time{}, true, "gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lifeLeft(now, tc.expiry, tc.gone); got != tc.want {
				t.Errorf("lifeLeft = %q; want %q", got, tc.want)
			}
		})
	}
}

func TestAskedAddr(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		name           string
		err            error
		configured     string
		want           string
		wantRedirected bool
	}{
		{"network error at the configured node", &url.Error{Op: "Put", URL: "https://vault.vault.svc:8200/v1/sys/leases/renew", Err: refused}, "https://vault.vault.svc:8200", "https://vault.vault.svc:8200", false},
		{"network error after a redirect", &url.Error{Op: "Put", URL: "https://10.0.0.5:8200/v1/sys/leases/renew", Err: refused}, "https://vault.vault.svc:8200", "https://10.0.0.5:8200", true},
		{"error answer after a redirect", &api.ResponseError{HTTPMethod: "PUT", URL: "http://127.0.0.1:8201/v1/sys/leases/renew", StatusCode: 500}, "http://127.0.0.1:8200", "http://127.0.0.1:8201", true},
		{"error answer from the configured node", &api.ResponseError{HTTPMethod: "PUT", URL: "http://127.0.0.1:8200/v1/auth/token/renew-self", StatusCode: 503}, "http://127.0.0.1:8200", "http://127.0.0.1:8200", false},
		{"wrapped", fmt.Errorf("read database/creds/app: %w", &url.Error{Op: "Get", URL: "http://b:8200/v1/x", Err: refused}), "http://a:8200", "http://b:8200", true},
		{"no URL", errors.New("the renewal answer holds no auth data"), "http://a:8200", "", false},
		{"unparsable URL", &url.Error{Op: "Get", URL: "::", Err: refused}, "http://a:8200", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, redirected := askedAddr(tc.err, tc.configured)
			if got != tc.want || redirected != tc.wantRedirected {
				t.Errorf("askedAddr = %q, %v; want %q, %v", got, redirected, tc.want, tc.wantRedirected)
			}
		})
	}
}

// TestRedirectedErrorNamesTheNodeAsked: the configured address is a
// standby that redirects to an active node that is down; the renewal
// error names the node asked and the redirect that led there.
func TestRedirectedErrorNamesTheNodeAsked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		lease := f.state().Secrets[0].LeaseID
		f.start()
		time.Sleep(5 * time.Second)
		v.mu.Lock()
		v.standby, v.activeDown = true, true
		v.mu.Unlock()
		time.Sleep(3 * time.Second) // the renewal at 6.6s fails
		logs := f.logs.String()
		var line string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "lease renewal failed") {
				line = l
				break
			}
		}
		if !strings.Contains(line, "vault_addr=http://active.test") || !strings.Contains(line, "redirected_from=http://vault.test") {
			t.Errorf("the renewal error does not name the node asked and the redirect:\n%s", logs)
		}
		v.mu.Lock()
		v.standby, v.activeDown = false, false
		v.mu.Unlock()
		f.appLoop(10 * time.Second)
		if got := f.state().Secrets[0].LeaseID; got != lease {
			t.Errorf("lease %s; want the same lease %s after a short outage", got, lease)
		}
		if strings.Contains(strings.Split(logs, "lease renewal failed")[0], "redirected_from") {
			t.Errorf("a redirect named before there was one:\n%s", logs)
		}
		f.stop()
	})
}

// TestLeaseWorkWaitsForTheNewToken: the token ends while logins keep
// failing; the lease under it does not try its dead token (which Vault
// refuses) but waits for the login, which re-issues it.
func TestLeaseWorkWaitsForTheNewToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.tokenTTL, v.tokenMax = 10*time.Second, 10*time.Second
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
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
