package renew

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
)

// Timeouts of single Vault operations. The loop runs one operation at a
// time, so these also bound how long one failing credential can delay the
// others.
const (
	maxAttempt     = 10 * time.Second // one Vault request
	fetchTimeout   = 20 * time.Second // a read, with vaultclient's retries inside
	rereadTimeout  = 5 * time.Second  // a re-read of data without a lease
	cleanupTimeout = 5 * time.Second  // revocations on the way out
	// stopGrace is how long a read or login already sent when SIGTERM
	// comes may still wait for its answer: once Vault issued a credential
	// or a token, only its answer lets vault-renew revoke it.
	stopGrace = 2 * time.Second
)

// finishing returns a context for a request that issues something (a
// read of a leased secret, a login) with deadline: cancelling ctx (SIGTERM)
// leaves a request already sent stopGrace more to be answered, at most a
// third of --revoke-timeout, which counts from SIGTERM. A request not yet
// sent when SIGTERM came is not sent.
func (s *sidecar) finishing(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if ctx.Err() != nil {
		return ctx, func() {}
	}
	grace := min(stopGrace, s.cfg.RevokeTimeout/3)
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return rctx, func() {
		stop()
		cancel()
	}
}

// errRevoked stops all work: vault-revoke ran (state.json has revoked_at).
// A step returns it when it finds that out; it is the only error a step
// returns.
var errRevoked = errors.New("vault-revoke ran")

// lostError is what vault-renew exits with under --exit-on-failure once a
// credential is lost (see markLost and tokenLost).
type lostError struct{ what string }

func (e *lostError) Error() string {
	return e.what + " expired while Vault kept failing; exiting because of --exit-on-failure"
}

// sidecar is vault-renew's running state. Only the loop goroutine touches
// it; the HTTP handlers read the snapshot in status.
type sidecar struct {
	// stopBy is when --revoke-timeout ends, counted from SIGTERM (Unix
	// nanoseconds; 0: no SIGTERM yet).
	stopBy atomic.Int64
	cfg    *Config
	dir    string
	log    *slog.Logger
	getenv func(string) string
	// base is state.json as loaded at start: what vault-renew never
	// changes (Vault address, how to log in, the secrets dir). The parts
	// it does change live in tok, secrets, retire and pending, and
	// stateInMemory puts them together.
	base  *state.State
	tok   *tokenItem  // the current token, swapped as a unit by a new login
	hedge *api.Client // sends a renewal again beside a slow one (hedged); nil: never
	// settle returns to the kernel the memory a round of work left free
	// (debug.FreeOSMemory), called when the loop is about to sleep for
	// settleAfter or more after doing something; nil: never.
	settle  func()
	worked  bool            // a step ran since the last settle
	secrets []*state.Secret // in state.json order; each group points to its own
	groups  []*group
	retire  []*retiring
	old     []*oldToken
	// pending are the new leases of a commit in progress, journaled in
	// state.json while their files are replaced.
	pending []state.Secret

	status  *status
	metrics *metrics
	notify  *notifier
	wake    <-chan struct{} // state.json changed; nil without a watch

	verify verifier // --verify-interval

	warnedShortToken bool
	// exit is set once a credential is lost under --exit-on-failure; the
	// loop returns it after the step that lost it.
	exit error
}

// earlierToken is the owner of a lease issued before the current token
// (state.json records when each was issued, not which token a lease
// belongs to): a token a previous run logged in with and replaced, which
// this run does not hold and cannot keep alive.
const earlierToken = "earlier-token"

// newSidecar builds the schedule from the state vault-init wrote: the
// token is looked up at once, every lease is renewed at its fraction, and
// nothing new is issued unless a lease already expired.
func newSidecar(cfg *Config, st *state.State, tok *tokenItem, getenv func(string) string, log *slog.Logger, n *notifier) *sidecar {
	now := time.Now()
	s := &sidecar{cfg: cfg, dir: cfg.StateDir, log: log, getenv: getenv, base: st, tok: tok, notify: n}
	byLease := map[string]*group{}
	for i := range st.Secrets {
		sec := new(state.Secret)
		*sec = st.Secrets[i]
		s.secrets = append(s.secrets, sec)
		key := sec.Path + "\x00" + sec.LeaseID
		if g := byLease[key]; g != nil {
			g.secrets = append(g.secrets, sec)
			continue
		}
		owner := s.tok.id
		if sec.Kind == state.KindLeased && sec.IssuedAt.Before(st.Token.IssuedAt) {
			owner = earlierToken
		}
		g := &group{
			secrets: []*state.Secret{sec}, path: sec.VaultPath(), kind: sec.Kind,
			owner: owner, expiry: sec.ExpiresAt, late: statePrecision,
			ld:        time.Duration(sec.LeaseDuration) * time.Second,
			renewable: sec.Renewable,
		}
		byLease[key] = g
		s.groups = append(s.groups, g)
		switch g.kind {
		case state.KindLeased:
			if !g.expiry.IsZero() && !g.expiry.After(now) {
				log.Warn("lease expired before vault-renew started: issuing a new credential", "secret", g.names(), "lease_id", g.leaseID(), "expired_at", g.expiry)
				g.gone, g.act, g.next = true, actRotate, now
				continue
			}
			if g.ld > 0 && g.renewable && g.expiry.Sub(now) > g.ld+statePrecision {
				// No lease outlives its TTL from now: the wall clock was
				// set back since state.json was written, and its expiry
				// is that much too late. A renewal gives the real one.
				log.Warn("the lease's expiry in state.json is further away than its TTL: the clock was set back since it was written; renewing the lease now to learn its real expiry",
					"secret", g.names(), "lease_id", g.leaseID(), "expires_at", g.expiry, "ttl", g.ld)
				g.act, g.next = actRenew, now
				continue
			}
			if g.owner == earlierToken {
				log.Warn("lease issued under an earlier token than the one in the token file (a restart came before its re-issue under the new token): it ends with that token, which only the previous run held; issuing a new credential",
					"secret", g.names(), "lease_id", g.leaseID(), "lease_issued_at", sec.IssuedAt, "token_issued_at", st.Token.IssuedAt)
				g.act, g.next = actRotate, now
				continue
			}
			s.schedule(now, g)
		case state.KindStatic:
			// Read at once to learn the data's fingerprint; the file is
			// fresh from vault-init, so a difference is no news to the app.
			g.act, g.next, g.quiet = actReread, now, true
		default:
			s.schedule(now, g)
		}
	}
	for _, r := range st.Retiring {
		s.retire = append(s.retire, &retiring{r: r})
	}
	if cfg.VerifyInterval > 0 {
		s.verify = verifier{next: now.Add(cfg.VerifyInterval), leases: true}
	}
	return s
}

// loop runs each action when it is due, sleeping on one timer in between.
// It returns nil when ctx ends, errRevoked when vault-revoke ran, and a
// lostError with --exit-on-failure.
func (s *sidecar) loop(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.publish()
		at, step := s.due()
		if s.worked && s.settle != nil && time.Until(at) >= settleAfter {
			s.settle()
			s.worked = false
		}
		timer.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			if err := s.checkRevoked(); err != nil {
				return err
			}
			continue
		case <-timer.C:
		}
		if err := s.checkRevoked(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			// SIGTERM, also one that came as the timer fired: no new
			// work, nothing issued that would need revoking.
			return nil
		}
		s.worked = true
		if err := step(ctx); err != nil {
			return err
		}
		if s.exit != nil {
			return s.exit
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// settleAfter is the least sleep ahead for which the loop gives memory
// back first: actions closer together than that (a token and a lease due
// together, quick retries in an outage) share one collection.
const settleAfter = 5 * time.Second

// due returns the earliest scheduled action.
func (s *sidecar) due() (time.Time, func(context.Context) error) {
	// The token always has a next action, or idles far in the future.
	at, step := s.tok.next, s.tokenStep
	if s.tok.act == tokIdle {
		at = time.Now().Add(24 * time.Hour)
		step = func(context.Context) error { return nil }
	}
	consider := func(t time.Time, f func(context.Context) error) {
		if !t.IsZero() && t.Before(at) {
			at, step = t, f
		}
	}
	for _, g := range s.groups {
		consider(g.next, func(ctx context.Context) error { return s.groupStep(ctx, g) })
	}
	for _, r := range s.retire {
		consider(s.retireAt(r), func(ctx context.Context) error { return s.retireStep(ctx, r) })
	}
	for _, o := range s.old {
		consider(s.oldTokenAt(o), func(ctx context.Context) error { return s.oldTokenStep(ctx, o) })
	}
	consider(s.verify.next, s.verifyStep)
	return at, step
}

// exitOnLoss records, under --exit-on-failure, that vault-renew must exit
// because what was lost; the first loss is the one reported.
func (s *sidecar) exitOnLoss(what string) {
	if s.cfg.ExitOnFailure && s.exit == nil {
		s.exit = &lostError{what: what}
	}
}

// retryAt schedules the next attempt of an item after a failure: the
// backoff of r, shortened before deadline (see retryAt in policy.go).
func (s *sidecar) retryAt(now time.Time, r *retry, deadline time.Time, permanent, lost bool) time.Time {
	return retryAt(now, r.after(now, permanent, lost), deadline)
}

// attempt returns a context for one Vault request about a credential
// that ends at expiry (zero: no end).
func attempt(ctx context.Context, expiry time.Time) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, attemptTimeout(time.Now(), expiry))
}
