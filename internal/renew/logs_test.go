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
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		lease := f.state().Secrets[0].LeaseID
		f.start()
		time.Sleep(4500 * time.Millisecond) // before the renewal due at 5s, not at that instant
		v.mu.Lock()
		v.standby, v.activeDown = true, true
		v.mu.Unlock()
		time.Sleep(3500 * time.Millisecond) // the renewal at 5s fails
		logs := f.logs.String()
		line := firstLineWith(logs, "lease renewal failed")
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

// TestRedirectedTwice: the configured address is a standby that
// redirects to the node that was active, which redirects again while it
// steps down. Vault's client would return that second redirect as an
// answer with no lease; the renewal fails instead, names the node that
// redirected and why it was not followed, and the same lease is renewed
// once the cluster answers again.
func TestRedirectedTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		lease := f.state().Secrets[0].LeaseID
		f.start()
		time.Sleep(4500 * time.Millisecond) // before the renewal due at 5s
		v.mu.Lock()
		v.standby, v.steppingDown = true, true
		renewals := v.leaseRenewals
		v.mu.Unlock()
		time.Sleep(3500 * time.Millisecond) // the renewal at 5s and its retries fail
		v.mu.Lock()
		if v.leaseRenewals != renewals {
			t.Errorf("%d lease renewals reached Vault through a second redirect", v.leaseRenewals-renewals)
		}
		v.standby, v.steppingDown = false, false
		v.mu.Unlock()
		logs := f.logs.String()
		line := firstLineWith(logs, "lease renewal failed")
		for _, want := range []string{"vault_addr=http://active.test", "redirected_from=http://vault.test", "had already been redirected to http://active.test"} {
			if !strings.Contains(line, want) {
				t.Errorf("the renewal error lacks %q:\n%s", want, logs)
			}
		}
		f.appLoop(10 * time.Second)
		if got := f.state().Secrets[0].LeaseID; got != lease {
			t.Errorf("lease %s; want the same lease %s after the failover", got, lease)
		}
		f.stop()
	})
}

// firstLineWith is the first line of logs that holds s, or "".
func firstLineWith(logs, s string) string {
	for l := range strings.Lines(logs) {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
