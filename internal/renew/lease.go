package renew

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

func (s *sidecar) groupStep(ctx context.Context, g *group) error {
	now := time.Now()
	if g.kind == state.KindLeased && !g.gone && !g.expiry.IsZero() && !now.Before(g.expiry) {
		g.gone = true
		s.log.Error("lease expired before it could be renewed or replaced: the credential in the file no longer works; issuing a new one",
			"secret", g.names(), "lease_id", g.leaseID(), "path", g.path)
		if s.cfg.ExitOnFailure {
			return &lostError{what: fmt.Sprintf("secret %s (lease %s)", g.names(), g.leaseID())}
		}
		g.act = actRotate
	}
	if g.kind == state.KindLeased && g.owner == s.tok.id && s.tokenDead(now) {
		// Issued under a token that has ended: any request with it is
		// refused, and the login that replaces it re-issues this
		// credential. Wait for that, just after the token's next try,
		// which comes at once if the token's end is not noticed yet.
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

// renewLease extends the lease by its duration and checks that it grew as
// asked; a shorter answer means the max TTL is near.
func (s *sidecar) renewLease(ctx context.Context, g *group) error {
	inc := g.ld
	actx, cancel := attempt(ctx, s.expiry(g))
	sec, err := s.client.Sys().RenewWithContext(actx, g.leaseID(), secs(inc))
	cancel()
	now := time.Now()
	if err != nil {
		return s.leaseFailed(ctx, now, g, err)
	}
	got := time.Duration(sec.LeaseDuration) * time.Second
	g.expiry = now.Add(got)
	g.renewable = sec.Renewable
	g.retry.reset()
	s.metrics.renewed(g)
	for _, sec := range g.secrets {
		sec.ExpiresAt = g.expiry.UTC().Truncate(time.Second)
	}
	if got < inc || !sec.Renewable {
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

// leaseFailed handles a failed lease renewal.
func (s *sidecar) leaseFailed(ctx context.Context, now time.Time, g *group, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	s.metrics.failed(g, opRenew)
	switch code := vaultclient.StatusCode(err); {
	case code == 400 && strings.Contains(vaultclient.Cause(err), "not renewable"):
		s.log.Warn("Vault says the lease is not renewable: replacing the credential before it expires", "secret", g.names(), "lease_id", g.leaseID(), "expires_in", until(now, g.expiry))
		g.renewable = false
		s.schedule(now, g)
	case code == 400 || code == 404:
		s.warnVault(err, "Vault no longer knows the lease (revoked or expired): issuing a new credential", "secret", g.names(), "lease_id", g.leaseID(), "err", vaultclient.Cause(err))
		g.gone, g.vaultGone = true, true
		g.act, g.next = actRotate, now
	case code == 403 || code == 401:
		s.warnVault(err, "permission denied renewing the lease: checking the token now; if the token is fine, the policy must allow update on sys/leases/renew. Until then the credential is replaced before it expires",
			"secret", g.names(), "lease_id", g.leaseID(), "expires_in", until(now, g.expiry), "err", vaultclient.Cause(err))
		g.capped = true
		s.schedule(now, g)
		s.checkTokenSoon(now)
	default:
		g.next = s.retryAt(now, &g.retry, g.expiry, !vaultclient.Transient(err), false)
		s.warnVault(err, "lease renewal failed; retrying with the same lease", "secret", g.names(), "lease_id", g.leaseID(), "err", vaultclient.Cause(err),
			"attempt", g.retry.fails, "retry_in", until(now, g.next), "lease_expires_in", until(now, g.expiry))
	}
	return nil
}

// rotate issues a new credential from the same path under the current
// token, and swaps the file.
func (s *sidecar) rotate(ctx context.Context, g *group) error {
	deadline := s.expiry(g)
	ch, err := s.fetch(ctx, s.client, s.tok.id, g, deadline)
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.failed(g, opRotate)
		g.next = s.retryAt(now, &g.retry, deadline, !vaultclient.Transient(err), g.gone)
		s.warnVault(err, "could not issue a new credential; retrying", "secret", g.names(), "path", g.path, "err", err.Error(),
			"attempt", g.retry.fails, "retry_in", until(now, g.next), "old_lease_expires_in", lifeLeft(now, latest(deadline, g.expiry), g.gone))
		if vaultclient.StatusCode(err) == 403 {
			s.checkTokenSoon(now)
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
	ch, err := s.fetch(ctx, s.client, s.tok.id, g, time.Now().Add(rereadTimeout))
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.failed(g, opReread)
		g.next = earliest(s.retryAt(now, &g.retry, time.Time{}, !vaultclient.Transient(err), false), now.Add(s.cfg.KVInterval))
		s.warnVault(err, "could not re-read the secret; its file keeps the current content", "secret", g.names(), "path", g.path, "err", err.Error(), "retry_in", until(now, g.next))
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
			if b, err := os.ReadFile(sec.File); err != nil || !bytes.Equal(b, ch.contents[i]) {
				changed = true
			}
		}
	}
	if g.kind == state.KindStatic && !changed && g.ident != "" && ch.f.TTL() < 2*time.Second && g.settle < 30 {
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

// schedule sets a group's next action from its expiry.
func (s *sidecar) schedule(now time.Time, g *group) {
	switch g.kind {
	case state.KindLeased:
		if g.expiry.IsZero() {
			g.next = time.Time{} // a lease without a TTL: nothing to do
			return
		}
		switch {
		case (g.capped || !g.renewable) && g.owner == s.tok.id && endsWithToken(g.expiry, s.tok.hard):
			// A new lease under the same token would end with it too (a
			// batch token caps its leases to its own life): the login
			// before the token ends issues the next one. Until then
			// only its expiry, if that login never succeeds.
			g.act, g.next = actRotate, g.expiry
		case g.capped || !g.renewable:
			g.act, g.next = actRotate, latest(now, g.expiry.Add(-s.rotateBefore(g.ld)))
		default:
			g.act, g.next = actRenew, s.renewAt(now, g.expiry)
		}
	case state.KindStatic:
		g.act, g.next = actReread, now.Add(s.cfg.KVInterval)
		if g.expiry.After(now) {
			// Vault rotates the password when the ttl ends: read just after.
			g.next = earliest(g.next, g.expiry.Add(staticSettle))
		}
	default:
		g.act, g.next = actReread, now.Add(s.cfg.KVInterval)
	}
}

// endsWithToken reports whether a lease that expires at expiry ends with
// the token that ends (can no longer be renewed) at tokenEnd; zero: the
// token's end is not known yet.
func endsWithToken(expiry, tokenEnd time.Time) bool {
	return !tokenEnd.IsZero() && !expiry.Before(tokenEnd.Add(-2*time.Second))
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

// checkTokenSoon renews the token now, for when a 403 may mean that it was
// revoked: the renewal tells, and a refused token is replaced.
func (s *sidecar) checkTokenSoon(now time.Time) {
	if s.tok.act == tokRenew && s.tok.next.After(now) {
		s.tok.next = now
	}
}

// change is a fresh read of a group's path, rendered, not yet written.
type change struct {
	g        *group
	f        *secrets.Fetched
	contents [][]byte // one per g.secrets
	owner    string   // tokenID of the token that read it
	client   *api.Client
	quiet    bool // no notification: the app has nothing new
}

// fetch reads g's path with client and renders every file of g. A
// credential that cannot be rendered is revoked at once.
func (s *sidecar) fetch(ctx context.Context, client *api.Client, owner string, g *group, deadline time.Time) (*change, error) {
	// Read until the credential in use dies at the latest: past it the
	// loop has other work (marking it lost, for one).
	d := time.Now().Add(fetchTimeout)
	if !deadline.IsZero() && deadline.After(time.Now()) {
		d = earliest(d, deadline)
	}
	fctx, cancel := context.WithDeadline(ctx, d)
	defer cancel()
	if g.gone {
		// The app has no working credential: retry inside the read as
		// often as between reads.
		fctx = vaultclient.WithMaxInterval(fctx, lostRetryCap)
	}
	f, err := secrets.Read(fctx, client, s.log, g.path)
	if err != nil {
		return nil, err
	}
	ch := &change{g: g, f: f, contents: make([][]byte, len(g.secrets)), owner: owner, client: client}
	lookup, list := s.lookup(fctx, client), secrets.Lister(fctx, client, s.log)
	for i, sec := range g.secrets {
		b, err := secrets.Render(sec, f, lookup, list)
		if err != nil {
			s.revokeLease(client, f.Resp.LeaseID, sec.Name)
			return nil, err
		}
		ch.contents[i] = b
	}
	return ch, nil
}

// lookup resolves {{ secret "PATH" }} in a template to another --secret
// without a lease, read afresh with client.
func (s *sidecar) lookup(ctx context.Context, client *api.Client) render.Lookup {
	return secrets.LookupState(s.st.Secrets, func(path string) (*secrets.Fetched, error) {
		return secrets.Read(ctx, client, s.log, path)
	})
}

// fingerprint identifies the data of a secret without a lease, leaving out
// the ttl a static credential counts down, so that a re-read rewrites the
// file only when the data changed.
func fingerprint(f *secrets.Fetched) string {
	fields := f.Fields
	if f.Kind == state.KindStatic {
		fields = maps.Clone(fields)
		delete(fields, "ttl")
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return ""
	}
	// Kept in memory only, like the secret itself.
	sum := sha256.Sum256(b)
	return string(sum[:])
}
