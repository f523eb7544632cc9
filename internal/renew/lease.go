package renew

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// group is one read of a Vault path and the files rendered from it: a
// lease to renew and replace, or a secret without a lease to read again.
// A state.json vault-init wrote gives every group one secret: vault-init
// refuses a path named by two --secret flags, and a template may take
// data from another --secret only if it has no lease.
type group struct {
	secrets []*state.Secret // the sidecar's records of the secrets, updated in apply
	path    string
	kind    string
	owner   string    // tokenID of the token the lease belongs to
	expiry  time.Time // lease expiry, or a static credential's rotation
	// late is how much later than expiry Vault may end the lease: the
	// round trip of the request that set expiry (Vault starts the TTL
	// while it handles it), or statePrecision for an expiry from
	// state.json.
	late      time.Duration
	ld        time.Duration // the lease's duration: what a renewal asks for
	renewable bool
	capped    bool   // renewals stopped extending it: replace before expiry
	gone      bool   // the credential no longer works (expired or refused): see markLost
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

func (s *sidecar) groupStep(ctx context.Context, g *group) error {
	now := time.Now()
	if g.kind == state.KindLeased && !g.gone && !g.expiry.IsZero() && !now.Before(g.expiry) {
		s.markLost(g, lossExpired)
		g.act = actRotate
		if s.exit != nil {
			return nil // no more work: the loop exits
		}
	}
	if g.kind == state.KindLeased && (g.owner == s.tok.id || g.owner == earlierToken) && s.tokenDead(now) {
		// Issued under a token that has ended: any request with it is
		// refused, and the login that replaces it re-issues this
		// credential. Wait for that, just after the token's next try,
		// which comes at once if the token's end is not noticed yet. A
		// lease of the token before it (a restart came before its
		// re-issue) waits too: no request can replace it before then.
		if !s.tok.lost {
			s.tok.next = earliest(s.tok.next, now)
		}
		g.next = latest(s.tok.next, now)
		s.log.Debug("waiting for the new token before issuing a new credential", "secret", g.names(), "lease_id", g.leaseID())
		return nil
	}
	if g.act == actRenew && g.owner != s.tok.id {
		// Issued under a token that is being replaced: a renewal would not
		// save it from that token's end.
		g.act = actRotate
	}
	switch g.act {
	case actRenew:
		return s.renewLease(ctx, g)
	case actRotate:
		return s.rotate(ctx, g)
	default:
		return s.reread(ctx, g)
	}
}

// markLost is the one path for a leased credential that stopped working,
// whatever the reason (loss in policy.go): it counts as lost on /readyz
// and /metrics, the app's file holds a dead credential until a new one is
// issued, and under --exit-on-failure vault-renew exits after this step
// when lossOutcome says so. The loss is logged here, but for a token's
// (tokenLost logs it once for every credential) and one Vault reported
// (the caller logs Vault's answer).
func (s *sidecar) markLost(g *group, l loss) {
	vaultGone, exits := lossOutcome(l)
	g.vaultGone = g.vaultGone || vaultGone
	if g.gone {
		return
	}
	g.gone = true
	what := fmt.Sprintf("secret %s (lease %s)", g.names(), g.leaseID())
	switch l {
	case lossExpired:
		s.log.Error("lease expired before it could be renewed or replaced: the credential in the file no longer works; issuing a new one",
			"secret", g.names(), "lease_id", g.leaseID(), "path", g.path)
	case lossOldToken:
		s.log.Error("the old token ended before this credential could be re-issued under the new one: the credential in the file no longer works; still trying to issue a new one",
			"secret", g.names(), "lease_id", g.leaseID(), "old_token_accessor", g.owner)
		what = fmt.Sprintf("secret %s (lease %s, with its token)", g.names(), g.leaseID())
	}
	if exits {
		s.exitOnLoss(what)
	}
}

// renewLease extends the lease by its duration and checks that it grew as
// asked; a shorter answer means the max TTL is near.
func (s *sidecar) renewLease(ctx context.Context, g *group) error {
	inc := g.ld
	sent := time.Now()
	sec, err := hedged(ctx, s.log, "lease renewal", []any{"secret", g.names(), "lease_id", g.leaseID()}, s.expiry(g), s.tok.client, s.hedge, func(ctx context.Context, c *api.Client) (*api.Secret, error) {
		return c.Sys().RenewWithContext(ctx, g.leaseID(), secs(inc))
	})
	now := time.Now()
	if err == nil && sec == nil {
		err = errors.New("the renewal answer holds no lease")
	}
	if err != nil {
		s.leaseFailed(ctx, now, g, err)
		return nil
	}
	got := time.Duration(sec.LeaseDuration) * time.Second
	g.expiry = sent.Add(got) // Vault counts the TTL from when it handled the request
	g.late = now.Sub(sent)
	g.renewable = sec.Renewable
	g.retry.reset()
	s.metrics.renewed(g)
	for _, sec := range g.secrets {
		sec.ExpiresAt = g.expiry.UTC().Truncate(time.Second)
	}
	if renewalCapped(inc, got, g.ld, sec.Warnings) || !sec.Renewable {
		g.capped = true
		s.schedule(now, g)
		s.log.Info("lease renewal came back shorter than asked: its max TTL is near; replacing the credential before it ends",
			"secret", g.names(), "lease_id", g.leaseID(), "asked", inc, "got", got, "replace_in", until(now, g.next))
	} else {
		s.schedule(now, g)
		s.log.Info("renewed lease", "secret", g.names(), "lease_id", g.leaseID(), "ttl", got, "next_renewal_in", until(now, g.next))
	}
	s.warnShortToken(now)
	return s.save(ctx)
}

// leaseFailed handles a failed lease renewal (leaseRenewFailure).
func (s *sidecar) leaseFailed(ctx context.Context, now time.Time, g *group, err error) {
	if ctx.Err() != nil {
		return
	}
	s.metrics.failed(g, opRenew)
	switch f := leaseRenewFailure(err); f {
	case failNotRenewable:
		s.log.Warn("Vault says the lease is not renewable: replacing the credential before it expires", "secret", g.names(), "lease_id", g.leaseID(), "expires_in", until(now, g.expiry))
		g.renewable = false
		s.schedule(now, g)
	case failGone:
		s.warnVault(err, "Vault no longer knows the lease (revoked or expired): issuing a new credential", "secret", g.names(), "lease_id", g.leaseID(), "err", vaultclient.Cause(err))
		s.markLost(g, lossRevoked)
		g.act, g.next = actRotate, now
	case failRefused:
		if s.tokenRefused(now, err) {
			return // the lease went with the token; the login re-issues it
		}
		s.warnVault(err, "permission denied renewing the lease: the policy must allow update on sys/leases/renew. Until then the credential is replaced before it expires",
			"secret", g.names(), "lease_id", g.leaseID(), "expires_in", until(now, g.expiry), "err", vaultclient.Cause(err))
		g.capped = true
		s.schedule(now, g)
	default:
		g.next = s.retryAt(now, &g.retry, g.expiry, f != failRetry, false)
		s.warnRetry(&g.retry, now, err, "lease renewal failed; retrying with the same lease", "secret", g.names(), "lease_id", g.leaseID(), "err", vaultclient.Cause(err),
			"attempt", g.retry.fails, "retry_in", until(now, g.next), "lease_expires_in", until(now, g.expiry))
	}
}

// rotate issues a new credential from the same path under the current
// token, and swaps the file.
func (s *sidecar) rotate(ctx context.Context, g *group) error {
	deadline := s.expiry(g)
	ch, err := s.fetch(ctx, s.tok.client, s.tok.id, g, deadline)
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.failed(g, opRotate)
		f := classify(err)
		g.next = s.retryAt(now, &g.retry, deadline, f != failRetry, g.gone)
		s.warnRetry(&g.retry, now, err, "could not issue a new credential; retrying", "secret", g.names(), "path", g.path, "err", err.Error(),
			"attempt", g.retry.fails, "retry_in", until(now, g.next), "old_lease_expires_in", lifeLeft(now, latest(deadline, g.expiry), g.gone))
		if f == failRefused {
			s.tokenRefused(now, err)
		}
		return nil
	}
	return s.commit(ctx, []*change{ch}, nil)
}

// reread reads a secret without a lease again and rewrites its files only
// if its data changed.
func (s *sidecar) reread(ctx context.Context, g *group) error {
	// Nothing expires here: a short try, so that an outage does not hold
	// up renewals; the next one comes with the backoff.
	ch, err := s.fetch(ctx, s.tok.client, s.tok.id, g, time.Now().Add(rereadTimeout))
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.failed(g, opReread)
		f := classify(err)
		g.next = earliest(s.retryAt(now, &g.retry, time.Time{}, f != failRetry, false), now.Add(s.cfg.KVInterval))
		s.warnRetry(&g.retry, now, err, "could not re-read the secret; its file keeps the current content", "secret", g.names(), "path", g.path, "err", err.Error(), "retry_in", until(now, g.next))
		return nil
	}
	g.retry.reset()
	ch.quiet, g.quiet = g.quiet, false
	ident := fingerprint(ch.f)
	changed := ident != g.ident
	if g.ident == "" {
		// First read since start: the file tells whether the data changed.
		changed = false
		for i, sec := range g.secrets {
			if !holds(sec.File, ch.contents[i]) {
				changed = true
			}
		}
	}
	if g.kind == state.KindStatic && !changed && g.ident != "" && ch.f.TTL() < 2*time.Second && g.settle < maxSettles {
		// The ttl ran out but Vault has not rotated the password yet.
		g.settle++
		g.next = now.Add(staticSettle)
		return nil
	}
	g.settle = 0
	if !changed {
		g.ident = ident
		if g.kind == state.KindStatic {
			g.expiry = ch.f.At.Add(ch.f.TTL())
		}
		s.schedule(now, g)
		s.log.Debug("secret unchanged", "secret", g.names(), "path", g.path, "next_read_in", until(now, g.next))
		return nil
	}
	return s.commit(ctx, []*change{ch}, nil)
}

// schedule sets a group's next action from its expiry (the policy in
// nextLeaseAction and nextStaticRead).
func (s *sidecar) schedule(now time.Time, g *group) {
	switch g.kind {
	case state.KindLeased:
		act, next := nextLeaseAction(now, leasePlan{
			expiry: g.expiry, ttl: g.ld, renewable: g.renewable, capped: g.capped,
			ownedByCur: g.owner == s.tok.id, tokenEnd: s.tok.hard,
		}, s.cfg, rand.Float64())
		if !g.expiry.IsZero() {
			g.act = act
		}
		g.next = next
	case state.KindStatic:
		g.act, g.next = actReread, nextStaticRead(now, g.expiry, s.cfg.KVInterval)
	default:
		g.act, g.next = actReread, now.Add(s.cfg.KVInterval)
	}
}

// expiry is when g's credential stops working: its lease's expiry, or
// sooner the end of the old token it was issued under; zero when it is
// already gone or has no expiry.
func (s *sidecar) expiry(g *group) time.Time {
	if g.kind != state.KindLeased || g.gone {
		return time.Time{}
	}
	e := g.expiry
	if o := s.oldToken(g.owner); o != nil && !e.IsZero() {
		e = earliest(e, o.expiry)
	}
	return e
}

// holds reports whether the file at path is a regular file holding
// exactly want. The secrets dir is shared with the app: whatever is found
// there (a symlink, a FIFO, a file larger than want) is read without
// following, blocking or reading past want, and counts as different, so
// the secret is written again.
func holds(path string, want []byte) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len(want)) {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(len(want))+1))
	return err == nil && bytes.Equal(b, want)
}
