package renew

import (
	"math/rand/v2"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/podlease/podlease/internal/vaultclient"
)

// The decisions vault-renew makes, as pure functions of the time, the
// facts about a credential and the answer Vault gave: when to renew, when
// to replace, how long to wait after a failure, when to revoke what was
// replaced, and what a Vault error means. The loop and the steps apply
// them; the table tests in policy_test.go pin every branch.

// The default renewal point: uniform between 0.7185 and 0.728 of the
// remaining TTL (mean 0.7233), leaving at least 0.272 of the TTL to retry
// in. Vault Agent (api.LifetimeWatcher: 2/3 of the lease plus a third of
// a grace drawn from [0.1, 0.2) of it, once per credential) renews each
// credential at one point between 0.700 and 0.733, so across a fleet it
// makes 1.396 requests per hour and credential at a 1 h TTL, and some of
// its pods leave only 0.267. vault-renew makes 1.383 (0.9% fewer) and
// leaves more than any Agent pod can. The window sits inside the Agent's
// so that both hold at once, with room to show in a bench of ten Agent
// pods; its 0.0095 of the TTL still spreads pods that renew together
// over 34 s at a 1 h TTL.
const (
	defaultRenewFraction = 0.728
	defaultJitter        = 0.013
)

// The floor under the time a renewal leaves before expiry: at least
// minMargin (less the jitter), but never more than maxMarginFraction of
// the remaining TTL. 0.272 of a short TTL is too little to ride out a
// Vault failover: a Raft cluster with performance_multiplier 1 has a new
// active node 1.3-3.3 s after its active node dies or steps down on an
// idle machine, and a renewal through it needs a request more on top.
// 5 s covers that, and is the same floor rotateBefore puts under a
// replacement. It changes nothing for TTLs over 5 s / 0.272 = 18.4 s, so
// the rate at long TTLs stays Vault Agent's; below 10 s it gives way to
// half the TTL, so that a 2 s TTL still renews once a second, not in a
// tight loop.
const (
	minMargin         = 5 * time.Second
	maxMarginFraction = 0.5
)

const (
	// permanentRetry is the shortest wait after an error that retrying
	// cannot fix by itself (403, a bad template): someone must change Vault.
	// Up to permanentJitter of it more, drawn each time, so that the pods
	// a policy change refuses all at once do not retry all at once.
	permanentRetry  = 30 * time.Second
	permanentJitter = 0.25
	// staticSettle is how long after a static credential's ttl ends Vault
	// is given to rotate the password before vault-renew re-reads it.
	staticSettle = time.Second
	// maxSettles bounds the re-reads spent waiting for Vault to rotate a
	// static credential after its ttl ran out.
	maxSettles = 30
	// lostRetryCap caps the backoff (±50% jitter: at most 3s between
	// attempts) while the app has no working credential: nothing is left
	// to save by waiting, and a new credential is due as soon as Vault
	// answers again. That holds for lostPatience; a loss that lasts
	// longer is an outage of Vault's (or of what its logins ask, such as
	// the Kubernetes API), which every pod of a fleet is retrying: from
	// then on the waits grow again up to lostLongCap, so that 10,000 pods
	// send about 330 requests a second (each login a TokenReview) to a
	// Vault coming back rather than 5,000.
	lostRetryCap = 2 * time.Second
	lostPatience = 2 * time.Minute
	lostLongCap  = 30 * time.Second
	// After the first logFirst failures of one credential in a row, its
	// retries log a line at most every logRepeatEvery, saying how many
	// failures went unlogged: a long outage costs a line a minute per
	// credential, not one per attempt.
	logFirst       = 3
	logRepeatEvery = time.Minute
	// tokenEndSlack is how close to its token's end a lease may expire and
	// still count as ending with it: Vault's times are whole seconds.
	tokenEndSlack = 2 * time.Second
	// minRetry is the shortest wait before a deadline.
	minRetry = 100 * time.Millisecond
	// attemptMin is the least time a request about a credential may wait
	// for Vault's answer while the credential has that much left (see
	// attemptTimeout).
	attemptMin = 1500 * time.Millisecond
	// minFetch is the least time a read replacing a credential is given,
	// even past the end of the credential in use (see fetchDeadline).
	minFetch = 5 * time.Second
	// attemptReserve is the least time a request leaves before its
	// credential ends, to act on the answer or its absence.
	attemptReserve = 500 * time.Millisecond
	// statePrecision is how much of a time state.json drops: it keeps
	// whole seconds.
	statePrecision = time.Second
	// tokenRevokeLead: a replaced token that ends within the grace period
	// is revoked this long before its end, since it revokes itself and an
	// expired token can do nothing.
	tokenRevokeLead = -time.Second
)

// renewAt is when to renew something expiring at expiry: after fraction
// of its remaining TTL, up to jitter of that earlier; u is a random number
// in [0, 1) that picks the point. Whatever the fraction, it leaves at
// least min(minMargin, maxMarginFraction of the remaining TTL) before
// expiry (see minMargin), the same jitter earlier.
func renewAt(now, expiry time.Time, fraction, jitter, u float64) time.Time {
	rem := expiry.Sub(now)
	if rem <= 0 {
		return now
	}
	d := time.Duration(float64(rem) * fraction)
	if latest := rem - min(minMargin, time.Duration(float64(rem)*maxMarginFraction)); d > latest {
		d = latest
	}
	d -= time.Duration(float64(d) * jitter * u)
	return now.Add(d)
}

// renewalCapped reports whether a renewal that asked for asked and got
// got ran into a max TTL: it came back shorter than asked. A periodic
// token is the exception: it answers its period, which is its normal TTL
// (ttl; 0: none known), whatever it is asked, so a first renewal asking
// for more than the TTL that comes back as exactly the TTL is a cap only
// if Vault's warnings say so (a token whose max TTL equals its TTL,
// renewed within a second of its login, answers the same).
func renewalCapped(asked, got, ttl time.Duration, warnings []string) bool {
	return got < asked && (ttl <= 0 || got != ttl || cappedWarning(warnings))
}

// cappedWarning reports whether Vault warned that it capped a TTL to a
// max TTL ("TTL of "1h" exceeded the effective max_ttl of "25s"; TTL value
// is capped accordingly").
func cappedWarning(warnings []string) bool {
	for _, w := range warnings {
		if strings.Contains(w, "exceeded the effective max_ttl") {
			return true
		}
	}
	return false
}

// rotateBefore is how long before a hard expiry to replace a credential
// whose normal TTL is ttl: configured (--rotate-before), or max(ttl/3,
// 5s), and never more than half the TTL so that a fresh credential is not
// replaced at once.
func rotateBefore(configured, ttl time.Duration) time.Duration {
	rb := configured
	if rb == 0 {
		rb = max(ttl/3, 5*time.Second)
	}
	if ttl > 0 && rb > ttl/2 {
		rb = ttl / 2
	}
	return rb
}

// endsWithToken reports whether a lease that expires at expiry ends with
// the token that ends (can no longer be renewed) at tokenEnd; zero: the
// token's end is not known yet.
func endsWithToken(expiry, tokenEnd time.Time) bool {
	return !tokenEnd.IsZero() && !expiry.Before(tokenEnd.Add(-tokenEndSlack))
}

// leasePlan is what is known of a leased credential when its next action
// is chosen.
type leasePlan struct {
	expiry     time.Time     // zero: the lease has no TTL
	ttl        time.Duration // the lease's duration
	renewable  bool
	capped     bool      // renewals stopped extending it
	ownedByCur bool      // issued under the current token
	tokenEnd   time.Time // when the current token can no longer be renewed; zero while unknown
}

// nextLeaseAction is a leased credential's next action and when: renew
// at the fraction while renewals extend it; once they do not, replace it
// rotateBefore its expiry, or, when a new lease under the same token
// would end with that token too, leave it to the login before the token
// ends (and to its expiry, should that login never succeed).
func nextLeaseAction(now time.Time, l leasePlan, cfg *Config, u float64) (groupAction, time.Time) {
	switch {
	case l.expiry.IsZero():
		return actRenew, time.Time{} // a lease without a TTL: nothing to do
	case (l.capped || !l.renewable) && l.ownedByCur && endsWithToken(l.expiry, l.tokenEnd):
		return actRotate, l.expiry
	case l.capped || !l.renewable:
		return actRotate, latest(now, l.expiry.Add(-rotateBefore(cfg.RotateBefore, l.ttl)))
	default:
		return actRenew, renewAt(now, l.expiry, cfg.RenewFraction, cfg.Jitter, u)
	}
}

// nextStaticRead is when to read a static database credential again: at
// the interval, or just after Vault rotates its password (its ttl ends
// at rotation), whichever comes first.
func nextStaticRead(now, rotation time.Time, interval time.Duration) time.Time {
	next := now.Add(interval)
	if rotation.After(now) {
		next = earliest(next, rotation.Add(staticSettle))
	}
	return next
}

// nextTokenAction is the token's next action and when: nothing for a
// token that never expires; renew at the fraction while a renewal can
// extend it and comes before the login is due; else log in again
// rotateBefore its hard end (hard: when it can no longer be renewed;
// zero while unknown).
func nextTokenAction(now, expiry, hard time.Time, ttl time.Duration, cfg *Config, u float64) (tokenAction, time.Time) {
	if expiry.IsZero() {
		return tokIdle, time.Time{}
	}
	loginAt := hard.Add(-rotateBefore(cfg.RotateBefore, ttl))
	if hard.IsZero() || expiry.Before(hard) {
		renew := renewAt(now, expiry, cfg.RenewFraction, cfg.Jitter, u)
		if hard.IsZero() || renew.Before(loginAt) {
			return tokRenew, renew
		}
	}
	return tokLogin, latest(now, loginAt)
}

// revokeAfterGrace is when to revoke a replaced credential (a lease, or
// the token that holds leases) that expires at expiry: after the grace
// period, or at fromEnd from its end when that comes first (a lease: at
// its end, see retireLease; a token: tokenRevokeLead); and still after
// the grace period when its expiry is unknown or looks past, since the
// clock may be wrong and the app may still use it.
func revokeAfterGrace(now, expiry time.Time, grace, fromEnd time.Duration) time.Time {
	if !expiry.After(now) {
		return now.Add(grace)
	}
	return latest(now, earliest(now.Add(grace), expiry.Add(fromEnd)))
}

// endBy is the latest a lease the sidecar counts as expiring at expiry can
// end in Vault, which may start its TTL up to late after the sidecar's
// count began (zero: unknown).
func endBy(expiry time.Time, late time.Duration) time.Time {
	if expiry.IsZero() {
		return expiry
	}
	return expiry.Add(late)
}

// retry is the backoff of one item between failed attempts.
type retry struct {
	b         *backoff.ExponentialBackOff
	lost      bool      // b is the backoff of a credential already lost
	lostSince time.Time // when b became that
	fails     int
	logged    time.Time // when a failure's line was last logged
	unlogged  int       // failures not logged since
}

func (r *retry) reset() { *r = retry{} }

// after returns how long to wait before the next attempt. lost says the
// credential is already gone: the waits start again from the shortest and
// stay under lostRetryCap (with jitter), since the app waits for every
// one of them, until the loss has lasted lostPatience.
func (r *retry) after(now time.Time, permanent, lost bool) time.Duration {
	if r.b == nil || r.lost != lost {
		// A new phase (renewing the credential, or replacing a lost one):
		// its attempts are counted, and the first of them logged, anew.
		*r = retry{b: vaultclient.Backoff(), lost: lost, lostSince: now}
		if lost {
			r.b.MaxInterval = lostRetryCap
		}
		r.b.Reset() // from InitialInterval
	}
	if lost && r.b.MaxInterval < lostLongCap && now.Sub(r.lostSince) >= lostPatience {
		r.b.MaxInterval = lostLongCap
	}
	r.fails++
	d := r.b.NextBackOff()
	if permanent {
		d = permanentRetry + time.Duration(rand.Float64()*permanentJitter*float64(permanentRetry))
	}
	return d
}

// lostCap is the longest wait between attempts (before jitter) while the
// credential r counts the failures of is lost: lostRetryCap, or more once
// the loss has lasted lostPatience.
func (r *retry) lostCap() time.Duration {
	if r.b == nil || !r.lost {
		return lostRetryCap
	}
	return r.b.MaxInterval
}

// loud reports whether the failure just counted is logged, and how many
// before it were not since the last line: the first logFirst in a row,
// then one every logRepeatEvery.
func (r *retry) loud(now time.Time) (bool, int) {
	if r.fails > logFirst && now.Sub(r.logged) < logRepeatEvery {
		r.unlogged++
		return false, 0
	}
	n := r.unlogged
	r.logged, r.unlogged = now, 0
	return true, n
}

// retryAt is when to try again after a wait of d: before a deadline (when
// the credential expires; zero: none) the waits shrink to half the time
// left, so that the last attempts come just before the credential would
// be lost.
func retryAt(now time.Time, d time.Duration, deadline time.Time) time.Time {
	if !deadline.IsZero() {
		left := deadline.Sub(now)
		if left <= 0 {
			return now
		}
		d = min(d, max(left/2, minRetry), left)
	}
	return now.Add(d)
}

// attemptTimeout is how long one Vault request about a credential that
// ends at expiry (zero: no end) may take before another try goes out: a
// third of the time left, at least attemptMin, at most maxAttempt; and
// never past the time left less a reserve (attemptReserve or a tenth of
// it, to act on the answer or its absence), or half of it when that is
// less. A node that never answers (a hung one, or a connection a
// partition swallowed) must not take all the time left, as another try
// may reach a node that answers, or the same one once it recovers: a
// third leaves room for two more. A renewal is not cut short there but
// sent again beside the first (see hedged and requestBudget). Connecting
// is bounded on its own, by the client's dial timeout
// (vaultclient.DialTimeout). An ended credential, or none, gets
// maxAttempt.
func attemptTimeout(now, expiry time.Time) time.Duration {
	left := expiry.Sub(now)
	if expiry.IsZero() || left <= 0 {
		return maxAttempt
	}
	return min(max(attemptMin, left/3), maxAttempt, requestBudget(now, expiry))
}

// requestBudget is how long a renewal of a credential that ends at expiry
// (zero: no end) may wait for Vault's answer: until the end less a reserve
// (attemptReserve or a tenth of the time left, to act on the answer or
// its absence), or half the time left when that is less; at most
// maxAttempt. A renewal cut short is lost work (Vault may have renewed,
// and the answer is thrown away), and a busy Vault, or a new active node
// taking over, answers in seconds: one that answers in 2s renews nothing
// for a client that gives up after a third of the 5s left.
func requestBudget(now, expiry time.Time) time.Duration {
	left := expiry.Sub(now)
	if expiry.IsZero() || left <= 0 {
		return maxAttempt
	}
	return min(maxAttempt, max(left-max(attemptReserve, left/10), left/2))
}

// slowLogin is how long a Kubernetes login may take on a busy cluster:
// Vault asks the API server for a TokenReview, which one under load
// answers in a second or two.
const slowLogin = 2500 * time.Millisecond

// loginTimeout is how long a login may wait for Vault's answer while the
// token it replaces ends at expiry (zero: no end, or the token is already
// dead): half the time left, or a third (attemptTimeout), or slowLogin,
// whichever is most, and never more than a renewal may wait
// (requestBudget). A login is not sent again beside a slow one, since
// every answer is a new token, and one the client gave up on while Vault
// finished it leaves a live token that nobody holds; so a login gets
// slowLogin when there is time for it. But a login that hangs must leave
// the rest of the time for one more login and the re-issue of every
// credential before the old token ends, or all of them end with it: with
// 5s left, it waits 2.5s.
func loginTimeout(now, expiry time.Time) time.Duration {
	left := expiry.Sub(now)
	if expiry.IsZero() || left <= 0 {
		return maxAttempt
	}
	return min(requestBudget(now, expiry), max(attemptTimeout(now, expiry), left/2, slowLogin))
}

// fetchDeadline is until when a read that replaces a credential ending at
// deadline (zero: none) may retry: fetchTimeout, and not much past the end
// of the credential in use, since past it the loop has other work
// (marking it lost, for one); but at least minFetch, so that a read Vault
// is about to answer is not cut short, leaving a lease no state names.
func fetchDeadline(now, deadline time.Time) time.Time {
	d := now.Add(fetchTimeout)
	if !deadline.IsZero() && deadline.After(now) {
		d = earliest(d, latest(deadline, now.Add(minFetch)))
	}
	return d
}

// failure is what a failed Vault request means for what to do next.
type failure int

const (
	failRetry        failure = iota // transient or unknown: retry with backoff
	failPermanent                   // retrying cannot fix it by itself: retry, slowly
	failRefused                     // 401/403: the token (or the policy) refuses it
	failNotRenewable                // 400 "not renewable": live with the expiry
	failGone                        // Vault no longer knows it (revoked or expired)
)

// classify tells what an error of a Vault request means, from its status
// code and message.
func classify(err error) failure {
	code := vaultclient.StatusCode(err)
	cause := strings.ToLower(vaultclient.Cause(err))
	switch {
	case vaultclient.LeadershipChange(err):
		return failRetry // whatever its status: see LeadershipChange
	case code == 401 || code == 403:
		return failRefused
	case code == 400 && strings.Contains(cause, "not renewable"):
		return failNotRenewable
	case code == 400 && (strings.Contains(cause, "invalid lease") || strings.Contains(cause, "lease not found")):
		return failGone
	case !vaultclient.Transient(err):
		return failPermanent
	}
	return failRetry
}

// leaseRenewFailure is what to do after a failed lease renewal (Vault
// answers 400 both for a lease that is not renewable and one it no
// longer knows, and 404 for the latter on some paths).
func leaseRenewFailure(err error) failure {
	switch f := classify(err); {
	case f == failNotRenewable || f == failRefused || f == failGone || f == failRetry:
		return f
	case vaultclient.StatusCode(err) == 400 || vaultclient.StatusCode(err) == 404:
		return failGone
	default:
		return f
	}
}

// tokenRenewFailure is what to do after a failed token renewal: any 400
// means Vault will not renew it ("token not renewable"), and so does a 403
// that does not call the token invalid.
func tokenRenewFailure(err error) failure {
	switch f := classify(err); {
	case f == failRefused && !vaultclient.TokenInvalid(err):
		// A live token whose policy lacks renew-self (an auth role
		// with token_no_default_policy): it lives to its expiry.
		return failNotRenewable
	case f == failRefused || f == failRetry:
		return f
	case vaultclient.StatusCode(err) == 400:
		return failNotRenewable
	default:
		return f
	}
}

// leaseRevokeFailure is what a failed revocation of a replaced lease
// means: 400 and 404 say it is already gone.
func leaseRevokeFailure(err error) failure {
	switch code := vaultclient.StatusCode(err); {
	case vaultclient.Transient(err):
		return failRetry // a 400 too, when Vault failed it: see vaultclient.Transient
	case code == 400 || code == 404:
		return failGone
	default:
		return classify(err)
	}
}

// lookupVerdict is what the answer to a lookup of a lease or the token
// (--verify-interval) says.
type lookupVerdict int

const (
	verdictAlive     lookupVerdict = iota // no error
	verdictGone                           // revoked or expired: replace it
	verdictForbidden                      // the policy does not allow the lookup
	verdictUnknown                        // Vault failed: the next renewal tells
)

// leaseVerdict classifies the answer to sys/leases/lookup.
func leaseVerdict(err error) lookupVerdict {
	switch {
	case err == nil:
		return verdictAlive
	case classify(err) == failGone:
		return verdictGone
	case classify(err) == failRefused:
		return verdictForbidden
	}
	return verdictUnknown
}

// tokenVerdict classifies the answer to lookup-self: a token Vault calls
// invalid is gone (revoked or expired); a plain "permission denied" is a
// live token whose policy lacks lookup-self (an auth role with
// token_no_default_policy).
func tokenVerdict(err error) lookupVerdict {
	switch {
	case err == nil:
		return verdictAlive
	case vaultclient.TokenInvalid(err):
		return verdictGone
	case classify(err) == failRefused:
		return verdictForbidden
	}
	return verdictUnknown
}

// loss is why a leased credential stopped working.
type loss int

const (
	lossExpired      loss = iota // it expired before it could be renewed or replaced
	lossOldToken                 // the replaced token it was issued under ended first
	lossToken                    // the current token, which holds it, expired
	lossTokenRefused             // Vault refused the current token (revoked)
	lossRevoked                  // Vault no longer knows the lease (revoked by hand)
)

// lossOutcome says what a loss implies: vaultGone, that Vault ended the
// lease itself, so there is nothing left to revoke; exits, that
// --exit-on-failure ends vault-renew for it (a credential that expired
// while Vault kept failing; a token's loss exits once for the token, and a
// revocation by hand is repaired, not a reason to restart).
func lossOutcome(l loss) (vaultGone, exits bool) {
	switch l {
	case lossExpired, lossOldToken:
		return false, true
	case lossTokenRefused, lossRevoked:
		return true, false
	default:
		return false, false
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
