package renew

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestHedged: what hedged returns, when, and after how many requests; with
// 5s left the budget is 4.5s and a second request goes out after 5s/3.
func TestHedged(t *testing.T) {
	newClient := func() *api.Client {
		c, err := api.NewClient(api.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	errSealed := errors.New("503 Vault is sealed")
	errDenied := errors.New("403 permission denied")
	const never = time.Hour
	after := 5 * time.Second / 3
	// how one request behaves: it answers err after d (never: not until
	// its context ends); second is every request after the first.
	type behaviour struct {
		d   time.Duration
		err error
	}
	for _, tc := range []struct {
		name          string
		expiry        time.Duration // from now; 0: no end
		noHedge       bool
		first, second behaviour
		want          error // nil: success; context.DeadlineExceeded: the budget ran out
		at            time.Duration
		requests      int
	}{
		{"answered in time: one request", 5 * time.Second, false, behaviour{100 * time.Millisecond, nil}, behaviour{}, nil, 100 * time.Millisecond, 1},
		{"slow answer: taken, not cut short", 5 * time.Second, false, behaviour{3 * time.Second, nil}, behaviour{never, nil}, nil, 3 * time.Second, 2},
		{"no answer: the second request's", 5 * time.Second, false, behaviour{never, nil}, behaviour{200 * time.Millisecond, nil}, nil, after + 200*time.Millisecond, 2},
		{"an error before the second request: at once", 5 * time.Second, false, behaviour{500 * time.Millisecond, errDenied}, behaviour{}, errDenied, 500 * time.Millisecond, 1},
		{"the second fails, the first answers", 5 * time.Second, false, behaviour{3 * time.Second, nil}, behaviour{100 * time.Millisecond, errSealed}, nil, 3 * time.Second, 2},
		{"both fail: Vault's answer over the timeout", 5 * time.Second, false, behaviour{never, nil}, behaviour{100 * time.Millisecond, errSealed}, errSealed, 4500 * time.Millisecond, 2},
		{"both answer errors: the later", 5 * time.Second, false, behaviour{2 * time.Second, errDenied}, behaviour{time.Second, errSealed}, errSealed, after + time.Second, 2},
		{"10 s left, no answer: two requests at most, the budget", 10 * time.Second, false, behaviour{never, nil}, behaviour{never, nil}, context.DeadlineExceeded, 9 * time.Second, 2},
		{"no second client: the budget", 5 * time.Second, true, behaviour{never, nil}, behaviour{}, context.DeadlineExceeded, 4500 * time.Millisecond, 1},
		{"no end: maxAttempt, no second request", 0, false, behaviour{never, nil}, behaviour{}, context.DeadlineExceeded, maxAttempt, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, hedge := newClient(), newClient()
				c.SetToken("the-token")
				if tc.noHedge {
					hedge = nil
				}
				start := time.Now()
				var expiry time.Time
				if tc.expiry > 0 {
					expiry = start.Add(tc.expiry)
				}
				var requests atomic.Int32
				var logs bytes.Buffer
				log := slog.New(slog.NewTextHandler(&logs, nil))
				_, err := hedged(context.Background(), log, "lease renewal", []any{"lease_id", "database/creds/app/x"}, expiry, c, hedge, func(ctx context.Context, cl *api.Client) (struct{}, error) {
					requests.Add(1)
					b := tc.first
					if cl != c {
						b = tc.second
						if cl.Token() != "the-token" {
							t.Error("the second request does not carry the first one's token")
						}
					}
					select {
					case <-time.After(b.d):
						return struct{}{}, b.err
					case <-ctx.Done():
						return struct{}{}, ctx.Err()
					}
				})
				n := int(requests.Load())
				if at := time.Since(start); !errors.Is(err, tc.want) || at != tc.at || n != tc.requests {
					t.Errorf("got %v after %s and %d requests; want %v after %s and %d", err, at, n, tc.want, tc.at, tc.requests)
				}
				if again := strings.Count(logs.String(), "sending the lease renewal again on a new connection"); again != n-1 || again > 0 && !strings.Contains(logs.String(), "lease_id=database/creds/app/x") {
					t.Errorf("%d requests logged as sent again; want %d, naming the lease:\n%s", again, n-1, &logs)
				}
				synctest.Wait() // the cancelled request has ended: no goroutine outlives the bubble
			})
		})
	}
}

// A Vault that answers every renewal only after 2s, a 10s lease renewed
// with 5s left: the renewal waits for the answer instead of giving up
// after 1.7s, trying again, giving up again, and losing the lease to a
// Vault that was working all along.
func TestASlowVaultStillRenews(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f, lease := newSlowDBFixture(t, 10*time.Second, 2*time.Second)
		f.start()
		time.Sleep(time.Minute)
		if got := f.state().Secrets[0].LeaseID; got != lease || !v.alive(lease) {
			t.Errorf("lease %s (alive: %v) after a minute of 2s answers; want %s kept\nlogs:\n%s", got, v.alive(lease), lease, f.logs)
		}
		if _, issued, renewals, _ := v.counts(); issued != 1 || renewals < 8 {
			t.Errorf("%d renewals, %d credentials; want at least 8 renewals of the one credential", renewals, issued)
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
}

// A renewal request that never gets an answer (a hung node, a connection
// a partition swallowed) is sent again beside it, on a connection of its
// own, after a third of the time left: the lease, or the token, is
// renewed by the second request, and nothing is lost or issued again.
func TestAHungRenewalIsSentAgain(t *testing.T) {
	for _, tc := range []struct{ name, path string }{
		{"lease", "sys/leases/renew"},
		{"token", "auth/token/renew-self"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL, v.tokenTTL = 10*time.Second, 10*time.Second })
				lease := f.state().Secrets[0].LeaseID
				f.start()
				time.Sleep(time.Second) // past the token's check at start
				v.mu.Lock()
				v.hang[tc.path] = 1
				v.mu.Unlock()
				time.Sleep(time.Minute)
				if got := f.state().Secrets[0].LeaseID; got != lease || !v.alive(lease) {
					t.Errorf("lease %s (alive: %v); want %s kept\nlogs:\n%s", got, v.alive(lease), lease, f.logs)
				}
				logins, issued, _, _ := v.counts()
				if logins != 1 || issued != 1 {
					t.Errorf("%d logins, %d credentials; want vault-init's one of each\nlogs:\n%s", logins, issued, f.logs)
				}
				v.mu.Lock()
				left := v.hang[tc.path]
				v.mu.Unlock()
				if left != 0 {
					t.Error("the hung request was never sent: the test proves nothing")
				}
				if logs := f.logs.String(); strings.Contains(logs, "failed") || strings.Count(logs, "again on a new connection") != 1 {
					t.Errorf("want one request sent again and no failure logged:\n%s", logs)
				}
				if code := f.stop(); code != 0 {
					t.Errorf("exit code %d", code)
				}
			})
		})
	}
}
