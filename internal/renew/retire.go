package renew

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/podlease/podlease/internal/revocation"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// retiring is a replaced lease waiting for its revocation. It is listed in
// state.json so that vault-revoke finds it if the pod ends first, and so
// that a restarted vault-renew revokes it.
type retiring struct {
	r      state.Retiring
	owner  string    // tokenID of an old token whose revocation covers it; "" if revoked on its own
	expiry time.Time // zero when unknown (read back from state.json)
	next   time.Time // a retry after a failed revocation
	retry  retry
	// parked: revoking it failed for good (permission denied, or Vault
	// kept failing); it stays listed in state.json, without more tries,
	// for vault-revoke to revoke with the token when the pod ends.
	parked bool
}

// retireLease schedules the revocation of a replaced lease: after the
// grace period, capped to the lease's own life, or with the old token that
// holds it. expiry is zero when the lease's end is unknown.
func (s *sidecar) retireLease(now time.Time, secret, leaseID, owner string, expiry time.Time) {
	r := &retiring{r: state.Retiring{Secret: secret, LeaseID: leaseID}, expiry: expiry}
	if o := s.oldToken(owner); o != nil && o.owned {
		r.owner = owner
		r.r.RevokeAt = o.revokeAt
	} else {
		r.r.RevokeAt = revokeAfterGrace(now, expiry, s.cfg.Grace)
	}
	r.r.RevokeAt = r.r.RevokeAt.UTC()
	s.retire = append(s.retire, r)
	s.log.Info("keeping the replaced lease for the grace period", "secret", secret, "lease_id", leaseID, "revoke_in", until(now, r.r.RevokeAt))
}

// revokeAfterGrace is when to revoke a replaced lease that expires at
// expiry: after the grace period, but before it expires by itself (and
// still after the grace period when its expiry is unknown or looks past,
// since the clock may be wrong and the app may still use it).
func revokeAfterGrace(now, expiry time.Time, grace time.Duration) time.Time {
	if !expiry.After(now) {
		return now.Add(grace)
	}
	return latest(now, earliest(now.Add(grace), expiry.Add(-time.Second)))
}

func (s *sidecar) retireAt(r *retiring) time.Time {
	if r.parked {
		return time.Time{}
	}
	if o := s.oldToken(r.owner); o != nil && o.owned {
		return time.Time{} // revoked with its token
	}
	if !r.next.IsZero() {
		return r.next
	}
	return r.r.RevokeAt
}

func (s *sidecar) retireStep(ctx context.Context, r *retiring) error {
	actx, cancel := attempt(ctx, time.Time{})
	err := s.client.Sys().RevokeWithContext(actx, r.r.LeaseID)
	cancel()
	now := time.Now()
	switch code := vaultclient.StatusCode(err); {
	case err == nil:
		s.log.Info("revoked the replaced lease", "secret", r.r.Secret, "lease_id", r.r.LeaseID)
	case ctx.Err() != nil:
		return nil
	case code == 400 || code == 404:
		s.log.Info("the replaced lease is already gone", "secret", r.r.Secret, "lease_id", r.r.LeaseID)
	case code == 403 || code == 401:
		s.log.Warn("permission denied revoking the replaced lease: allow update on sys/leases/revoke in the policy; it stays valid until it expires, or until vault-revoke revokes the token",
			"secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err))
		r.parked = true
		return s.save(ctx)
	default:
		deadline := r.expiry
		if deadline.IsZero() {
			deadline = r.r.RevokeAt.Add(10 * time.Minute)
		}
		if now.Before(deadline) {
			r.next = s.retryAt(now, &r.retry, deadline, !vaultclient.Transient(err), false)
			s.log.Warn("revoking the replaced lease failed; retrying", "secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err), "retry_in", until(now, r.next))
			return nil
		}
		s.log.Warn("giving up revoking the replaced lease; it stays listed for vault-revoke, and expires at its TTL", "secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err))
		r.parked = true
		return s.save(ctx)
	}
	s.dropRetiring(r)
	return s.save(ctx)
}

func (s *sidecar) dropRetiring(r *retiring) {
	s.retire = slices.DeleteFunc(s.retire, func(x *retiring) bool { return x == r })
}

func (s *sidecar) retiringState() []state.Retiring {
	if len(s.retire) == 0 {
		return nil
	}
	out := make([]state.Retiring, len(s.retire))
	for i, r := range s.retire {
		out[i] = r.r
	}
	return out
}

func (s *sidecar) oldToken(accessor string) *oldToken {
	for _, o := range s.old {
		if o.accessor == accessor {
			return o
		}
	}
	return nil
}

// holds reports whether a credential in use still depends on the token.
func (s *sidecar) holds(accessor string) bool {
	for _, g := range s.groups {
		if g.kind == state.KindLeased && g.owner == accessor && !g.gone {
			return true
		}
	}
	return false
}

func (s *sidecar) oldTokenAt(o *oldToken) time.Time {
	if !o.owned || s.holds(o.accessor) {
		// A credential could not be re-issued yet: keep the old token
		// until it dies rather than kill that credential early.
		return o.expiry
	}
	if !o.next.IsZero() {
		return o.next
	}
	return o.revokeAt
}

// oldTokenStep revokes a replaced token once the grace period is over,
// which revokes the leases issued under it.
func (s *sidecar) oldTokenStep(ctx context.Context, o *oldToken) error {
	now := time.Now()
	if !now.Before(o.expiry) {
		s.log.Debug("the old token expired before its revocation", "token_accessor", o.accessor)
		for _, g := range s.groups {
			if g.kind == state.KindLeased && g.owner == o.accessor && !g.gone {
				g.gone = true
				s.log.Error("the old token ended before this credential could be re-issued under the new one: the credential in the file no longer works; still trying to issue a new one",
					"secret", g.names(), "lease_id", g.leaseID(), "old_token_accessor", o.accessor)
				if s.cfg.ExitOnFailure {
					return &lostError{what: fmt.Sprintf("secret %s (lease %s, with its token)", g.names(), g.leaseID())}
				}
			}
		}
		s.dropOldToken(o)
		return s.save(ctx)
	}
	actx, cancel := attempt(ctx, time.Time{})
	err := o.client.Auth().Token().RevokeSelfWithContext(actx, "")
	cancel()
	now = time.Now()
	if code := vaultclient.StatusCode(err); err != nil && code != 403 && code != 401 {
		if ctx.Err() != nil {
			return nil
		}
		o.next = s.retryAt(now, &o.retry, o.expiry, !vaultclient.Transient(err), false)
		s.log.Warn("revoking the old token failed; retrying", "token_accessor", o.accessor, "err", vaultclient.Cause(err), "retry_in", until(now, o.next))
		return nil
	}
	n := s.dropOldToken(o)
	s.log.Info("revoked the old token and the leases issued under it", "token_accessor", o.accessor, "leases", n)
	return s.save(ctx)
}

// dropOldToken forgets o and the replaced leases it held; it returns how
// many there were.
func (s *sidecar) dropOldToken(o *oldToken) int {
	s.old = slices.DeleteFunc(s.old, func(x *oldToken) bool { return x == o })
	n := len(s.retire)
	s.retire = slices.DeleteFunc(s.retire, func(r *retiring) bool { return r.owner == o.accessor })
	return n - len(s.retire)
}

// revokeOldTokens revokes every replaced token still held, for when the
// pod is ending: nobody else knows these tokens.
func (s *sidecar) revokeOldTokens(ctx context.Context) {
	for _, o := range slices.Clone(s.old) {
		if !o.owned {
			continue
		}
		if err := o.client.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil && vaultclient.StatusCode(err) != 403 {
			s.log.Warn("could not revoke an old token; it and its leases expire at their TTL", "token_accessor", o.accessor, "err", vaultclient.Cause(err))
			continue
		}
		s.log.Info("revoked an old token and the leases issued under it", "token_accessor", o.accessor)
		s.dropOldToken(o)
	}
}

// revokeAll is --revoke-on-exit: what vault-revoke does (revoke every
// lease, retiring ones included, and the token; remove the files; mark the
// state revoked), for the state and token in memory, after revoking the
// old tokens only vault-renew knows.
func (s *sidecar) revokeAll() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RevokeTimeout)
	defer cancel()
	s.revokeOldTokens(ctx)
	// What the sidecar holds, whatever the disk says: state.json may be
	// gone, renamed, corrupt, or behind the memory.
	known := *s.st
	known.Retiring = s.retiringState()
	known.Pending = s.pending
	if err := revocation.RevokeKnown(ctx, s.dir, s.cfg.SecretsDir, &known, s.tok.token, s.log); err != nil {
		s.log.Warn("--revoke-on-exit did not finish; what is left expires at its TTL", "err", err)
		return
	}
	s.log.Info("revoked every credential on exit (--revoke-on-exit)")
}
