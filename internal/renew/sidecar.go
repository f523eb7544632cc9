package renew

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// Timeouts of single Vault operations. The scheduler runs one operation at
// a time, so these also bound how long one failing credential can delay
// the others.
const (
	attemptTimeout = 10 * time.Second // one Vault request
	fetchTimeout   = 20 * time.Second // a read, with vaultclient's retries inside
	rereadTimeout  = 5 * time.Second  // a re-read of data without a lease
	cleanupTimeout = 5 * time.Second  // revocations on the way out
	// permanentRetry is the shortest wait after an error that retrying
	// cannot fix by itself (403, a bad template): someone must change Vault.
	permanentRetry = 30 * time.Second
	// staticSettle is how long after a static credential's ttl ends Vault
	// is given to rotate the password before vault-renew re-reads it.
	staticSettle = time.Second
	// lostRetryCap caps the backoff (±50% jitter: at most 3s between
	// attempts) while the app has no working credential: nothing is left
	// to save by waiting, and a new credential is due as soon as Vault
	// answers again.
	lostRetryCap = 2 * time.Second
)

var (
	// errRevoked stops all work: vault-revoke ran (state.json has
	// revoked_at).
	errRevoked = errors.New("vault-revoke ran")
)

// lostError is returned with --exit-on-failure when a credential expired
// before it could be renewed or replaced.
type lostError struct{ what string }

func (e *lostError) Error() string {
	return e.what + " expired while Vault kept failing; exiting because of --exit-on-failure"
}

// sidecar is vault-renew's running state. Only the loop goroutine touches
// it; the HTTP handlers read the snapshot in status.
type sidecar struct {
	cfg    *Config
	dir    string
	log    *slog.Logger
	getenv func(string) string
	client *api.Client  // carries the current token
	st     *state.State // in-memory copy, authoritative for token, secrets and retiring
	tok    *tokenItem
	groups []*group
	retire []*retiring
	old    []*oldToken
	// pending are the new leases of a commit in progress, journaled in
	// state.json while their files are replaced.
	pending []state.Secret

	status  *status
	metrics *metrics
	notify  *notifier
	wake    <-chan struct{} // state.json changed; nil without a watch

	verify verifier // --verify-interval

	warnedShortToken bool
	fatal            error // a lostError to exit with (--exit-on-failure)
}

// tokenItem is the current token.
type tokenItem struct {
	token  string        // the secret itself: never logged
	id     string        // tokenID: who owns a lease; safe to log
	batch  bool          // a batch token: never renewed or revoked
	ttl    time.Duration // what a renewal asks for: the token's creation TTL
	expiry time.Time     // zero: the token never expires
	hard   time.Time     // when it can no longer be renewed; zero while unknown
	lost   bool          // expired or refused: its leases are gone
	probe  time.Duration // what the first renewal asks for, when longer than ttl
	act    tokenAction
	next   time.Time
	retry  retry
}

type tokenAction int

const (
	tokLookup tokenAction = iota // at start: learn the token's real TTL
	tokRenew
	tokLogin
	tokIdle // never expires
)

// group is one read of a Vault path and the files rendered from it. Most
// groups hold one secret; vault-init reads a path once even when several
// --secret flags name it, so those files share one lease.
type group struct {
	secrets   []*state.Secret // point into sidecar.st.Secrets
	path      string
	kind      string
	owner     string        // tokenID of the token the lease belongs to
	expiry    time.Time     // lease expiry, or a static credential's rotation
	ld        time.Duration // the lease's duration: what a renewal asks for
	renewable bool
	capped    bool   // renewals stopped extending it: replace before expiry
	gone      bool   // the credential no longer works (expired or refused)
	vaultGone bool   // Vault said the lease no longer exists: nothing to retire
	ident     string // fingerprint of a non-leased secret's data
	quiet     bool   // do not notify the app about the next re-read
	settle    int    // re-reads spent waiting for Vault to rotate a static credential
	act       groupAction
	next      time.Time
	retry     retry
}

type groupAction int

const (
	actRenew groupAction = iota
	actRotate
	actReread
)

func (g *group) names() string {
	if len(g.secrets) == 1 {
		return g.secrets[0].Name
	}
	n := make([]string, len(g.secrets))
	for i, s := range g.secrets {
		n[i] = s.Name
	}
	return strings.Join(n, ",")
}

func (g *group) leaseID() string { return g.secrets[0].LeaseID }

// retry is the backoff of one item between failed attempts.
type retry struct {
	b     *backoff.ExponentialBackOff
	lost  bool // b is the backoff of a credential already lost
	fails int
}

func (r *retry) reset() { r.b, r.lost, r.fails = nil, false, 0 }

// after returns how long to wait before the next attempt. lost says the
// credential is already gone: the waits start again from the shortest and
// stay under lostRetryCap (with jitter), since the app waits for every
// one of them.
func (r *retry) after(permanent, lost bool) time.Duration {
	if r.b == nil || r.lost != lost {
		r.b, r.lost = vaultclient.Backoff(), lost
		if lost {
			r.b.MaxInterval = lostRetryCap
		}
		r.b.Reset() // from InitialInterval
	}
	r.fails++
	d := r.b.NextBackOff()
	if permanent && d < permanentRetry {
		d = permanentRetry
	}
	return d
}

// newSidecar builds the schedule from the state vault-init wrote: the
// token is looked up at once, every lease is renewed at its fraction, and
// nothing new is issued unless a lease already expired.
func newSidecar(cfg *Config, st *state.State, token string, client *api.Client, getenv func(string) string, log *slog.Logger, n *notifier) *sidecar {
	now := time.Now()
	s := &sidecar{
		cfg: cfg, dir: cfg.StateDir, log: log, getenv: getenv,
		client: client, st: st, notify: n,
		tok: &tokenItem{
			token:  token,
			id:     tokenID(st.Token.Accessor, token),
			batch:  st.Token.Batch() || st.Token.Accessor == "",
			ttl:    time.Duration(st.Token.TTL) * time.Second,
			expiry: st.Token.ExpiresAt,
			act:    tokLookup,
			next:   now,
		},
	}
	if st.Token.TTL == 0 {
		s.tok.expiry = time.Time{}
	}
	byLease := map[string]*group{}
	for i := range st.Secrets {
		sec := &st.Secrets[i]
		key := sec.Path + "\x00" + sec.LeaseID
		if g := byLease[key]; g != nil {
			g.secrets = append(g.secrets, sec)
			continue
		}
		g := &group{
			secrets: []*state.Secret{sec}, path: sec.VaultPath(), kind: sec.Kind,
			owner: s.tok.id, expiry: sec.ExpiresAt,
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
		if err := step(ctx); err != nil {
			return err
		}
		if s.fatal != nil {
			return s.fatal
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

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

// checkRevoked reads state.json: once vault-revoke ran, nothing may be
// renewed, rotated or issued again. Only revoked_at says that: a state
// file that vanished or cannot be read is not a revocation, so the state
// in memory (which is authoritative) is written again.
func (s *sidecar) checkRevoked() error {
	disk, err := state.Load(s.dir)
	switch {
	case err == nil && disk.RevokedAt != nil:
		return errRevoked
	case err == nil:
		return nil
	case errors.Is(err, state.ErrNotExist):
		s.log.Warn("state.json is gone; that is not a revocation (vault-revoke marks it revoked_at): writing it again from the state in memory", "state_dir", s.dir)
	default:
		s.log.Warn("cannot read state.json; writing it again from the state in memory", "err", err)
	}
	return s.save(context.Background())
}

// renewAt is when to renew something expiring at expiry: after the
// --renew-fraction of its remaining TTL, up to --jitter of that earlier.
func (s *sidecar) renewAt(now, expiry time.Time) time.Time {
	rem := expiry.Sub(now)
	if rem <= 0 {
		return now
	}
	d := time.Duration(float64(rem) * s.cfg.RenewFraction)
	d -= time.Duration(float64(d) * s.cfg.Jitter * rand.Float64())
	return now.Add(d)
}

// rotateBefore is how long before a hard expiry to replace a credential
// whose normal TTL is ttl: --rotate-before, or max(ttl/3, 5s), and never
// more than half the TTL so that a fresh credential is not replaced at
// once.
func (s *sidecar) rotateBefore(ttl time.Duration) time.Duration {
	rb := s.cfg.RotateBefore
	if rb == 0 {
		rb = max(ttl/3, 5*time.Second)
	}
	if ttl > 0 && rb > ttl/2 {
		rb = ttl / 2
	}
	return rb
}

// attempt returns a context for one Vault request about a credential
// that ends at expiry (zero: no end): at most attemptTimeout, and while
// the credential lives at most a quarter of its time left, so that a
// request that never gets an answer still leaves time to retry before it
// ends.
func attempt(ctx context.Context, expiry time.Time) (context.Context, context.CancelFunc) {
	d := attemptTimeout
	if left := time.Until(expiry); !expiry.IsZero() && left > 0 {
		d = min(d, max(time.Second, left/4))
	}
	return context.WithTimeout(ctx, d)
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

// until renders the time left before t for logs.
func until(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return max(t.Sub(now), 0).Round(100 * time.Millisecond).String()
}

// lifeLeft renders for logs how long a credential that ends at expiry
// (zero: never) has left; gone says it already stopped working (expired,
// refused, or its token ended), whatever its expiry said.
func lifeLeft(now, expiry time.Time, gone bool) string {
	switch {
	case !expiry.IsZero() && !now.Before(expiry):
		return "expired " + now.Sub(expiry).Round(100*time.Millisecond).String() + " ago"
	case gone:
		return "gone"
	default:
		return until(now, expiry)
	}
}

func secs(d time.Duration) int { return int(d / time.Second) }
