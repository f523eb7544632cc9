package renew

import (
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

func TestRotateBefore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag, ttl, want time.Duration
	}{
		{0, time.Hour, 20 * time.Minute},
		{0, 10 * time.Second, 5 * time.Second},
		{0, 6 * time.Second, 3 * time.Second}, // never more than half the TTL
		{time.Minute, time.Hour, time.Minute},
		{time.Hour, time.Hour, 30 * time.Minute},
	} {
		if got := rotateBefore(tc.flag, tc.ttl); got != tc.want {
			t.Errorf("rotateBefore(--rotate-before %s, ttl %s) = %s; want %s", tc.flag, tc.ttl, got, tc.want)
		}
	}
}

func TestRenewAtJitter(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for range 1000 {
		d := renewAt(now, now.Add(100*time.Second), 0.66, 0.1, rand.Float64()).Sub(now)
		if d < 59400*time.Millisecond || d > 66*time.Second {
			t.Fatalf("renewal %s after now for a 100s TTL; want between 59.4s and 66s", d)
		}
	}
}

// TestEndsWithToken: a lease that ends with its token is re-issued by the
// next login, not rotated under the same token (a batch token caps its
// leases to its own life).
func TestEndsWithToken(t *testing.T) {
	t.Parallel()
	end := time.Date(2030, 1, 1, 0, 0, 20, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		expiry time.Time
		want   bool
	}{
		{"capped to the token's end", end, true},
		{"a second before (rounding)", end.Add(-time.Second), true},
		{"after it", end.Add(time.Minute), true},
		{"well before it", end.Add(-10 * time.Second), false},
		{"token end unknown", end, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokenEnd := end
			if tc.name == "token end unknown" {
				tokenEnd = time.Time{}
			}
			if got := endsWithToken(tc.expiry, tokenEnd); got != tc.want {
				t.Errorf("endsWithToken = %v; want %v", got, tc.want)
			}
		})
	}
}

// TestRetryAfterALongLossGrows: a loss that lasts lostPatience is a
// fleet-wide outage: the waits grow again, up to lostLongCap (±50%).
func TestRetryAfterALongLossGrows(t *testing.T) {
	var r retry
	start := time.Unix(0, 0)
	var longest time.Duration
	for now := start; now.Sub(start) < lostPatience+10*time.Minute; {
		w := r.after(now, false, true)
		if now.Sub(start) < lostPatience && w > 3*time.Second {
			t.Fatalf("wait %s %s into the loss; want at most 3s for %s", w, now.Sub(start), lostPatience)
		}
		if w > lostLongCap*3/2 {
			t.Fatalf("wait %s %s into the loss; want at most %s", w, now.Sub(start), lostLongCap*3/2)
		}
		longest = max(longest, w)
		now = now.Add(w)
	}
	if longest < lostLongCap/2 {
		t.Errorf("longest wait %s in a loss of %s; want it to reach %s", longest, lostPatience+10*time.Minute, lostLongCap/2)
	}
}

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
		{"lost, permanent", true, true, permanentRetry, permanentRetry + permanentRetry/4, permanentRetry},
		{"permanent", true, false, permanentRetry, 3 * permanentRetry / 2, permanentRetry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r retry
			var waits []time.Duration
			var longest time.Duration
			now := time.Unix(0, 0)
			for range 40 {
				w := r.after(now, tc.permanent, tc.lost)
				now = now.Add(w)
				waits = append(waits, w)
				longest = max(longest, w)
				if w < tc.shortest || w > tc.longest {
					t.Fatalf("wait %s after %d failures; want between %s and %s", w, r.fails, tc.shortest, tc.longest)
				}
			}
			if longest < tc.reach {
				t.Errorf("longest wait %s; want the backoff to reach %s", longest, tc.reach)
			}
			if tc.permanent && slices.Min(waits) == longest {
				t.Errorf("every wait %s; want them spread, so that pods refused together do not retry together", longest)
			}
			if !tc.permanent && waits[0] > 375*time.Millisecond {
				t.Errorf("first wait %s; want the shortest (250ms ±50%%)", waits[0])
			}
		})
	}
	// A credential lost after a long outage starts again from the shortest
	// wait, not from where the renewal's backoff had grown to.
	var r retry
	now := time.Unix(0, 0)
	for range 10 {
		now = now.Add(r.after(now, false, false))
	}
	if w := r.after(now, false, true); w > 375*time.Millisecond {
		t.Errorf("first wait after the loss %s; want the shortest (250ms ±50%%)", w)
	}
}

// TestRevokeAfterGrace: when a replaced lease, or token, is revoked.
func TestRevokeAfterGrace(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	grace := 30 * time.Second
	for _, tc := range []struct {
		name    string
		expiry  time.Time
		fromEnd time.Duration
		want    time.Time
	}{
		{"long-lived lease: after the grace period", now.Add(time.Hour), 0, now.Add(grace)},
		{"lease ending within the grace period: at its end, when Vault ends it", now.Add(10 * time.Second), 0, now.Add(10 * time.Second)},
		{"lease ending in under a second: still at its end", now.Add(500 * time.Millisecond), 0, now.Add(500 * time.Millisecond)},
		{"lease ending just after the grace period: after the grace period", now.Add(grace + 500*time.Millisecond), 0, now.Add(grace)},
		{"token ending within the grace period: a second before its end, while it can revoke itself", now.Add(10 * time.Second), tokenRevokeLead, now.Add(9 * time.Second)},
		{"token ending in under a second: now", now.Add(500 * time.Millisecond), tokenRevokeLead, now},
		{"unknown end: after the grace period", time.Time{}, 0, now.Add(grace)},
		{"looks expired (the clock may be wrong): after the grace period", now.Add(-time.Minute), 0, now.Add(grace)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := revokeAfterGrace(now, tc.expiry, grace, tc.fromEnd); !got.Equal(tc.want) {
				t.Errorf("revokeAfterGrace = %s; want %s", got, tc.want)
			}
		})
	}
}

// TestEndBy: the latest a lease can end is its expiry as the sidecar
// counts it plus the time Vault may have started its TTL later; unknown
// stays unknown.
func TestEndBy(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := endBy(now, 300*time.Millisecond); !got.Equal(now.Add(300 * time.Millisecond)) {
		t.Errorf("endBy(now, 300ms) = %s", got)
	}
	if got := endBy(time.Time{}, time.Second); !got.IsZero() {
		t.Errorf("endBy(zero, 1s) = %s; want zero", got)
	}
}

// TestLookupVerdicts: what a failed lookup means.
func TestLookupVerdicts(t *testing.T) {
	t.Parallel()
	vaultErr := func(code int, msg string) error {
		return &api.ResponseError{StatusCode: code, Errors: []string{msg}}
	}
	for _, tc := range []struct {
		name         string
		err          error
		lease, token lookupVerdict
	}{
		{"alive", nil, verdictAlive, verdictAlive},
		{"lease revoked", vaultErr(400, "invalid lease"), verdictGone, verdictUnknown},
		{"permission denied", vaultErr(403, "permission denied"), verdictForbidden, verdictForbidden},
		{"invalid token", vaultErr(403, invalidToken), verdictForbidden, verdictGone},
		{"server error", vaultErr(500, "internal error"), verdictUnknown, verdictUnknown},
		{"network", errors.New("dial tcp: connection refused"), verdictUnknown, verdictUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := leaseVerdict(tc.err); got != tc.lease {
				t.Errorf("leaseVerdict = %v; want %v", got, tc.lease)
			}
			if got := tokenVerdict(tc.err); got != tc.token {
				t.Errorf("tokenVerdict = %v; want %v", got, tc.token)
			}
		})
	}
}

// vaultErr is an error answer from Vault.
func vaultErr(code int, msg string) error {
	return &api.ResponseError{StatusCode: code, Errors: []string{msg}}
}

var policyNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestRenewAt(t *testing.T) {
	t.Parallel()
	now := policyNow
	for _, tc := range []struct {
		name             string
		expiry           time.Time
		fraction, jitter float64
		u                float64
		want             time.Time
	}{
		{"at the fraction", now.Add(100 * time.Second), 0.66, 0.1, 0, now.Add(66 * time.Second)},
		{"earliest with jitter", now.Add(100 * time.Second), 0.66, 0.1, 1, now.Add(59400 * time.Millisecond)},
		{"no jitter", now.Add(100 * time.Second), 0.5, 0, 0.7, now.Add(50 * time.Second)},
		{"expired: now", now.Add(-time.Second), 0.66, 0.1, 0, now},
		{"expires now: now", now, 0.66, 0.1, 0, now},
		// The margin's floor: at least 5 s left, at most half the TTL.
		{"1 h: the fraction", now.Add(time.Hour), 0.73, 0.03, 0, now.Add(2628 * time.Second)},
		{"20 s: the fraction (5.4 s left)", now.Add(20 * time.Second), 0.73, 0.03, 0, now.Add(14600 * time.Millisecond)},
		{"18.5 s: where the floor starts", now.Add(18500 * time.Millisecond), 0.73, 0.03, 0, now.Add(13500 * time.Millisecond)},
		{"15 s: 5 s left", now.Add(15 * time.Second), 0.73, 0.03, 0, now.Add(10 * time.Second)},
		{"15 s, earliest with jitter", now.Add(15 * time.Second), 0.73, 0.03, 1, now.Add(9700 * time.Millisecond)},
		{"10 s: 5 s left", now.Add(10 * time.Second), 0.73, 0.03, 0, now.Add(5 * time.Second)},
		{"6 s: half the TTL left", now.Add(6 * time.Second), 0.73, 0.03, 0, now.Add(3 * time.Second)},
		{"2 s: renews after 1 s, not in a loop", now.Add(2 * time.Second), 0.73, 0.03, 0, now.Add(time.Second)},
		{"a fraction of 0.9 gets the floor too", now.Add(10 * time.Second), 0.9, 0, 0, now.Add(5 * time.Second)},
		{"a fraction of 0.3 leaves more than the floor", now.Add(10 * time.Second), 0.3, 0, 0, now.Add(3 * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := renewAt(now, tc.expiry, tc.fraction, tc.jitter, tc.u); !got.Equal(tc.want) {
				t.Errorf("renewAt = %s; want %s", got.Sub(now), tc.want.Sub(now))
			}
		})
	}
}

func TestNextLeaseAction(t *testing.T) {
	t.Parallel()
	now := policyNow
	cfg := &Config{RenewFraction: 0.5, Jitter: 0}
	exp := now.Add(60 * time.Second)
	for _, tc := range []struct {
		name     string
		l        leasePlan
		wantAct  groupAction
		wantNext time.Time
	}{
		{"no TTL: nothing to do", leasePlan{renewable: true}, actRenew, time.Time{}},
		{"renewable: renew at the fraction", leasePlan{expiry: exp, ttl: time.Minute, renewable: true, ownedByCur: true}, actRenew, now.Add(30 * time.Second)},
		{"capped: replace rotate-before its end", leasePlan{expiry: exp, ttl: time.Minute, renewable: true, capped: true, ownedByCur: true}, actRotate, exp.Add(-20 * time.Second)},
		{"not renewable: replace rotate-before its end", leasePlan{expiry: exp, ttl: time.Minute, ownedByCur: true}, actRotate, exp.Add(-20 * time.Second)},
		{"capped, rotate-before already past: now", leasePlan{expiry: now.Add(10 * time.Second), ttl: time.Minute, capped: true, ownedByCur: true}, actRotate, now},
		{"capped, ends with its token: left to the login", leasePlan{expiry: exp, ttl: time.Minute, capped: true, ownedByCur: true, tokenEnd: exp}, actRotate, exp},
		{"capped, ends with an old token: replaced under the current one", leasePlan{expiry: exp, ttl: time.Minute, capped: true, tokenEnd: exp}, actRotate, exp.Add(-20 * time.Second)},
		{"capped, ends well before its token", leasePlan{expiry: exp, ttl: time.Minute, capped: true, ownedByCur: true, tokenEnd: exp.Add(time.Hour)}, actRotate, exp.Add(-20 * time.Second)},
		{"renewable, token end known: still renewed", leasePlan{expiry: exp, ttl: time.Minute, renewable: true, ownedByCur: true, tokenEnd: exp}, actRenew, now.Add(30 * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			act, next := nextLeaseAction(now, tc.l, cfg, 0)
			if act != tc.wantAct || !next.Equal(tc.wantNext) {
				t.Errorf("nextLeaseAction = %v at %s; want %v at %s", act, next, tc.wantAct, tc.wantNext)
			}
		})
	}
}

func TestNextStaticRead(t *testing.T) {
	t.Parallel()
	now := policyNow
	for _, tc := range []struct {
		name     string
		rotation time.Time
		want     time.Time
	}{
		{"rotation after the interval: at the interval", now.Add(time.Hour), now.Add(5 * time.Minute)},
		{"rotation before the interval: just after it", now.Add(time.Minute), now.Add(time.Minute + staticSettle)},
		{"rotation unknown: at the interval", time.Time{}, now.Add(5 * time.Minute)},
		{"rotation past: at the interval", now.Add(-time.Second), now.Add(5 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextStaticRead(now, tc.rotation, 5*time.Minute); !got.Equal(tc.want) {
				t.Errorf("nextStaticRead = %s; want %s", got, tc.want)
			}
		})
	}
}

func TestNextTokenAction(t *testing.T) {
	t.Parallel()
	now := policyNow
	cfg := &Config{RenewFraction: 0.5, Jitter: 0}
	for _, tc := range []struct {
		name         string
		expiry, hard time.Time
		ttl          time.Duration
		wantAct      tokenAction
		wantNext     time.Time
	}{
		{"never expires: idle", time.Time{}, time.Time{}, 0, tokIdle, time.Time{}},
		{"max TTL unknown: renew at the fraction", now.Add(time.Hour), time.Time{}, time.Hour, tokRenew, now.Add(30 * time.Minute)},
		{"max TTL far: renew", now.Add(time.Hour), now.Add(24 * time.Hour), time.Hour, tokRenew, now.Add(30 * time.Minute)},
		{"renewal would come after the login: log in rotate-before the max TTL", now.Add(time.Hour), now.Add(time.Hour + 10*time.Minute), 3 * time.Hour, tokLogin, now.Add(10 * time.Minute)},
		{"cannot grow (expiry is the max TTL): log in", now.Add(time.Hour), now.Add(time.Hour), time.Hour, tokLogin, now.Add(40 * time.Minute)},
		{"login overdue: now", now.Add(5 * time.Second), now.Add(5 * time.Second), time.Hour, tokLogin, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			act, next := nextTokenAction(now, tc.expiry, tc.hard, tc.ttl, cfg, 0)
			if act != tc.wantAct || !next.Equal(tc.wantNext) {
				t.Errorf("nextTokenAction = %v at %s; want %v at %s", act, next, tc.wantAct, tc.wantNext)
			}
		})
	}
}

func TestRetryAt(t *testing.T) {
	t.Parallel()
	now := policyNow
	for _, tc := range []struct {
		name     string
		d        time.Duration
		deadline time.Time
		want     time.Time
	}{
		{"no deadline: the backoff", 10 * time.Second, time.Time{}, now.Add(10 * time.Second)},
		{"deadline far: the backoff", 10 * time.Second, now.Add(time.Hour), now.Add(10 * time.Second)},
		{"deadline near: half the time left", 10 * time.Second, now.Add(8 * time.Second), now.Add(4 * time.Second)},
		{"deadline very near: the shortest wait", 10 * time.Second, now.Add(150 * time.Millisecond), now.Add(minRetry)},
		{"deadline nearer than the shortest wait: at it", 10 * time.Second, now.Add(50 * time.Millisecond), now.Add(50 * time.Millisecond)},
		{"deadline past: now", 10 * time.Second, now.Add(-time.Second), now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryAt(now, tc.d, tc.deadline); !got.Equal(tc.want) {
				t.Errorf("retryAt = %s; want %s", got.Sub(now), tc.want.Sub(now))
			}
		})
	}
}

func TestAttemptTimeoutRequestBudgetLoginTimeoutAndFetchDeadline(t *testing.T) {
	t.Parallel()
	now := policyNow
	for _, tc := range []struct {
		name         string
		expiry       time.Time
		attempt      time.Duration
		budget       time.Duration
		login        time.Duration
		fetchUntil   time.Time
		fetchUntilOK bool
	}{
		{"no end", time.Time{}, maxAttempt, maxAttempt, maxAttempt, now.Add(fetchTimeout), true},
		{"far end", now.Add(time.Hour), maxAttempt, maxAttempt, maxAttempt, now.Add(fetchTimeout), true},
		{"30 s left: a third", now.Add(30 * time.Second), maxAttempt, maxAttempt, maxAttempt, now.Add(fetchTimeout), true},
		{"10 s left: a third, a login half, read until the end", now.Add(10 * time.Second), 10 * time.Second / 3, 9 * time.Second, 5 * time.Second, now.Add(10 * time.Second), true},
		{"5 s left (the margin's floor): a third, a login half", now.Add(5 * time.Second), 5 * time.Second / 3, 4500 * time.Millisecond, 2500 * time.Millisecond, now.Add(5 * time.Second), true},
		{"3 s left: attemptMin, a login slowLogin; read for minFetch", now.Add(3 * time.Second), attemptMin, 2500 * time.Millisecond, slowLogin, now.Add(minFetch), true},
		{"2 s left: all but the reserve", now.Add(2 * time.Second), 1500 * time.Millisecond, 1500 * time.Millisecond, 1500 * time.Millisecond, now.Add(minFetch), true},
		{"1.5 s left: all but the reserve", now.Add(1500 * time.Millisecond), time.Second, time.Second, time.Second, now.Add(minFetch), true},
		{"0.8 s left: half of it", now.Add(800 * time.Millisecond), 400 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond, now.Add(minFetch), true},
		{"0.1 s left: half of it", now.Add(100 * time.Millisecond), 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, now.Add(minFetch), true},
		{"ended", now.Add(-time.Second), maxAttempt, maxAttempt, maxAttempt, now.Add(fetchTimeout), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := attemptTimeout(now, tc.expiry); got != tc.attempt {
				t.Errorf("attemptTimeout = %s; want %s", got, tc.attempt)
			}
			if got := requestBudget(now, tc.expiry); got != tc.budget {
				t.Errorf("requestBudget = %s; want %s", got, tc.budget)
			}
			if got := loginTimeout(now, tc.expiry); got != tc.login {
				t.Errorf("loginTimeout = %s; want %s", got, tc.login)
			}
			if got := fetchDeadline(now, tc.expiry); !got.Equal(tc.fetchUntil) {
				t.Errorf("fetchDeadline = %s; want %s", got.Sub(now), tc.fetchUntil.Sub(now))
			}
		})
	}
}

// TestFailures: what each Vault answer means for a lease renewal, a token
// renewal and a revocation of a replaced lease.
func TestFailures(t *testing.T) {
	t.Parallel()
	refused := &url.Error{Op: "Put", URL: "http://vault.test/v1/sys/leases/renew", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		name                      string
		err                       error
		classify, lease, tok, rev failure
	}{
		{"permission denied", vaultErr(403, "permission denied"), failRefused, failRefused, failNotRenewable, failRefused},
		{"invalid token", vaultErr(403, invalidToken), failRefused, failRefused, failRefused, failRefused},
		{"unauthorized", vaultErr(401, "unauthorized"), failRefused, failRefused, failRefused, failRefused},
		{"not renewable", vaultErr(400, "lease is not renewable"), failNotRenewable, failNotRenewable, failNotRenewable, failGone},
		{"invalid lease", vaultErr(400, "invalid lease"), failGone, failGone, failNotRenewable, failGone},
		{"lease not found", vaultErr(400, "lease not found"), failGone, failGone, failNotRenewable, failGone},
		{"other bad request", vaultErr(400, "missing lease_id"), failPermanent, failGone, failNotRenewable, failGone},
		{"not found", vaultErr(404, ""), failPermanent, failGone, failPermanent, failGone},
		{"server error", vaultErr(500, "internal error"), failRetry, failRetry, failRetry, failRetry},
		// A node that stopped being the active one mid-request: Vault's
		// lease and token endpoints answer its storage error as 400.
		{"400 not the leader", vaultErr(400, "failed to delete lease entry: node is not the leader"), failRetry, failRetry, failRetry, failRetry},
		{"400 leadership lost", vaultErr(400, "failed to persist lease entry: leadership lost while committing log"), failRetry, failRetry, failRetry, failRetry},
		// The database failed the revocation: Vault keeps the lease.
		{"400 revocation failed", vaultErr(400, "failed to revoke entry: resp: (*logical.Response)(nil) err: ERROR: tuple concurrently updated (SQLSTATE XX000)"), failRetry, failRetry, failRetry, failRetry},
		// The database failed the renewal (unreachable, the role
		// deleted): Vault keeps the lease, which works to its expiry.
		{"400 renewal failed", vaultErr(400, "failed to renew entry: resp: (*logical.Response)(nil) err: could not find role with name: tmp"), failRetry, failRetry, failRetry, failRetry},
		{"sealed", vaultErr(503, "Vault is sealed"), failRetry, failRetry, failRetry, failRetry},
		{"rate limited", vaultErr(429, "rate limit"), failRetry, failRetry, failRetry, failRetry},
		{"connection refused", refused, failRetry, failRetry, failRetry, failRetry},
		{"a local problem", errors.New("no auth data"), failPermanent, failPermanent, failPermanent, failPermanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.classify {
				t.Errorf("classify = %v; want %v", got, tc.classify)
			}
			if got := leaseRenewFailure(tc.err); got != tc.lease {
				t.Errorf("leaseRenewFailure = %v; want %v", got, tc.lease)
			}
			if got := tokenRenewFailure(tc.err); got != tc.tok {
				t.Errorf("tokenRenewFailure = %v; want %v", got, tc.tok)
			}
			if got := leaseRevokeFailure(tc.err); got != tc.rev {
				t.Errorf("leaseRevokeFailure = %v; want %v", got, tc.rev)
			}
		})
	}
}

func TestLossOutcome(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		l                loss
		vaultGone, exits bool
	}{
		{"expired while Vault failed: exits", lossExpired, false, true},
		{"its old token ended first: exits", lossOldToken, false, true},
		{"its token expired: the token's loss exits once", lossToken, false, false},
		{"its token was refused: nothing to revoke", lossTokenRefused, true, false},
		{"revoked by hand: replaced, no exit", lossRevoked, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if gone, exits := lossOutcome(tc.l); gone != tc.vaultGone || exits != tc.exits {
				t.Errorf("lossOutcome = %v, %v; want %v, %v", gone, exits, tc.vaultGone, tc.exits)
			}
		})
	}
}

func TestRenewalCapped(t *testing.T) {
	t.Parallel()
	capWarning := []string{`TTL of "59m59s" exceeded the effective max_ttl of "25s"; TTL value is capped accordingly`}
	for _, tc := range []struct {
		name       string
		asked, got time.Duration
		ttl        time.Duration
		warnings   []string
		want       bool
	}{
		{"got what was asked", time.Hour, time.Hour, time.Hour, nil, false},
		{"got less than asked", time.Hour, 20 * time.Second, 10 * time.Second, nil, true},
		{"a lease: got less than its duration", 10 * time.Second, 6 * time.Second, 10 * time.Second, nil, true},
		{"periodic token: its period, whatever was asked", time.Hour, 25 * time.Second, 25 * time.Second, nil, false},
		{"max TTL equal to the TTL, within a second of the login: Vault warns", time.Hour, 25 * time.Second, 25 * time.Second, capWarning, true},
		{"TTL unknown: less than asked", time.Hour, 25 * time.Second, 0, nil, true},
		{"other warnings say nothing", time.Hour, 25 * time.Second, 25 * time.Second, []string{"some other warning"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := renewalCapped(tc.asked, tc.got, tc.ttl, tc.warnings); got != tc.want {
				t.Errorf("renewalCapped = %v; want %v", got, tc.want)
			}
		})
	}
}

// TestDefaultRenewalPoint: with the default flags a renewal comes between
// 0.7185 and 0.728 of the remaining TTL: across a fleet no more often than
// Vault Agent's (api.LifetimeWatcher: 2/3 of the lease plus a third of a
// grace drawn from [0.1, 0.2) of it, once per credential: a point drawn
// from 0.700 to 0.733), with a lead a bench of ten Agent pods can see,
// and never with less of the TTL left than the Agent can leave (0.267).
func TestDefaultRenewalPoint(t *testing.T) {
	t.Parallel()
	c := &Config{RenewFraction: defaultRenewFraction, Jitter: defaultJitter}
	now := policyNow
	const ttl = time.Hour
	lo, hi := renewAt(now, now.Add(ttl), c.RenewFraction, c.Jitter, 1), renewAt(now, now.Add(ttl), c.RenewFraction, c.Jitter, 0)
	flo, fhi := float64(lo.Sub(now))/float64(ttl), float64(hi.Sub(now))/float64(ttl)
	if flo < 0.7185 || flo > 0.7186 {
		t.Errorf("earliest renewal at %.4f of the TTL; want 0.7185", flo)
	}
	if fhi != 0.728 {
		t.Errorf("latest renewal at %.4f of the TTL; want 0.728", fhi)
	}
	// Renewals per TTL for a point uniform in [a, b]: the mean of 1/f.
	perTTL := func(a, b float64) float64 { return math.Log(b/a) / (b - a) }
	agentLo, agentHi := 2.0/3+0.1/3, 2.0/3+0.2/3
	rate, agentRate := perTTL(flo, fhi), perTTL(agentLo, agentHi)
	// A bench of ten Agent pods measures the mean of 20 draws of 1/f: the
	// lead must be three standard deviations of that.
	sd := (1/agentLo - 1/agentHi) / math.Sqrt(12) / math.Sqrt(20)
	if rate > agentRate-3*sd {
		t.Errorf("%.4f renewals per TTL; want no more than Vault Agent's %.4f less %.4f", rate, agentRate, 3*sd)
	}
	if margin, agentMargin := 1-fhi, 1-agentHi; margin <= agentMargin {
		t.Errorf("least time left %.4f of the TTL; want more than Vault Agent's %.4f", margin, agentMargin)
	}
}
