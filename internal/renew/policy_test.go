package renew

import (
	"errors"
	"math/rand/v2"
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
		{"permission denied", vaultErr(403, "permission denied"), verdictForbidden, verdictGone},
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
