package renew

import (
	"context"
	"slices"
	"time"

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
	// for vault-revoke to revoke with the token when the pod ends, until
	// its expiry, when Vault has ended it (see retireAt and maxParked).
	parked bool
}

// maxParked bounds the parked leases listed in state.json: one whose
// expiry is known is dropped at its expiry, but one read back from
// state.json at start has none, and could otherwise stay listed for
// good. The oldest go first; a lease dropped from the list still ends at
// its TTL, or with its token.
const maxParked = 16

// retireLease schedules the revocation of a replaced lease: after the
// grace period, or once the lease has ended by itself if that comes first
// (revokeAfterGrace), so that the app may use it for all of its life and
// the revocation only confirms Vault's expiry; or with the old token that
// holds it, when that token is ours to revoke. expiry is the latest Vault
// may end the lease (see endBy); zero when its end is unknown.
func (s *sidecar) retireLease(now time.Time, secret, leaseID, owner string, expiry time.Time) {
	r := &retiring{r: state.Retiring{Secret: secret, LeaseID: leaseID}, expiry: expiry}
	if o := s.oldToken(owner); o != nil && o.owned {
		r.owner = owner
		r.r.RevokeAt = o.revokeAt
	} else {
		r.r.RevokeAt = revokeAfterGrace(now, expiry, s.cfg.Grace, 0)
	}
	r.r.RevokeAt = r.r.RevokeAt.UTC()
	s.retire = append(s.retire, r)
	s.log.Info("keeping the replaced lease for the grace period", "secret", secret, "lease_id", leaseID, "revoke_in", until(now, r.r.RevokeAt))
}

func (s *sidecar) retireAt(r *retiring) time.Time {
	if r.parked {
		return r.expiry // zero (unknown): never, see maxParked
	}
	if o := s.oldToken(r.owner); o != nil && o.owned {
		return time.Time{} // revoked with its token
	}
	if !r.next.IsZero() {
		return r.next
	}
	return r.r.RevokeAt
}

// retireStep revokes a replaced lease whose grace period is over, or
// forgets a parked one that has ended.
func (s *sidecar) retireStep(ctx context.Context, r *retiring) error {
	if r.parked {
		s.log.Info("the replaced lease that could not be revoked has ended: Vault ended it, so it is no longer listed", "secret", r.r.Secret, "lease_id", r.r.LeaseID)
		s.dropRetiring(r)
		return s.save(ctx)
	}
	actx, cancel := attempt(ctx, time.Time{})
	err := s.tok.client.Sys().RevokeWithContext(actx, r.r.LeaseID)
	cancel()
	now := time.Now()
	if err == nil {
		s.log.Info("revoked the replaced lease", "secret", r.r.Secret, "lease_id", r.r.LeaseID)
		s.dropRetiring(r)
		return s.save(ctx)
	}
	if ctx.Err() != nil {
		return nil
	}
	switch f := leaseRevokeFailure(err); f {
	case failGone:
		s.log.Info("the replaced lease is already gone", "secret", r.r.Secret, "lease_id", r.r.LeaseID)
		s.dropRetiring(r)
	case failRefused:
		if !s.tokenRefused(now, err) {
			s.warnVault(err, "permission denied revoking the replaced lease: the policy must allow update on sys/leases/revoke. The lease stays listed until it expires, or until vault-revoke revokes the token",
				"secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err))
		}
		s.park(r)
	default:
		deadline := r.expiry
		if deadline.IsZero() {
			deadline = r.r.RevokeAt.Add(10 * time.Minute)
		}
		switch {
		case now.Before(deadline):
			r.next = s.retryAt(now, &r.retry, deadline, f != failRetry, false)
			s.warnRetry(&r.retry, now, err, "revoking the replaced lease failed; retrying", "secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err), "retry_in", until(now, r.next))
			return nil
		case !r.expiry.IsZero():
			// Past the latest Vault may end it: Vault has ended it, and
			// the revocation would only have confirmed that.
			if r.retry.fails == 0 {
				s.log.Info("the replaced lease has ended, and Vault ended it by itself; confirming that failed, so it is no longer listed", "secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err))
			} else {
				s.log.Warn("revoking the replaced lease kept failing until it ended; Vault ended it by itself, so it is no longer listed", "secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err))
			}
			s.dropRetiring(r)
		default:
			s.log.Warn("giving up revoking the replaced lease; it stays listed for vault-revoke, and expires at its TTL", "secret", r.r.Secret, "lease_id", r.r.LeaseID, "err", vaultclient.Cause(err))
			s.park(r)
		}
	}
	return s.save(ctx)
}

// park stops trying to revoke r: it stays listed until its expiry, and
// the oldest parked leases beyond maxParked are dropped from the list.
func (s *sidecar) park(r *retiring) {
	r.parked = true
	var parked []*retiring
	for _, x := range s.retire {
		if x.parked {
			parked = append(parked, x)
		}
	}
	if len(parked) <= maxParked {
		return
	}
	slices.SortStableFunc(parked, func(a, b *retiring) int { return a.r.RevokeAt.Compare(b.r.RevokeAt) })
	for _, x := range parked[:len(parked)-maxParked] {
		s.log.Info("too many replaced leases could not be revoked: no longer listing the oldest; it ends at its TTL, or with its token", "secret", x.r.Secret, "lease_id", x.r.LeaseID)
		s.dropRetiring(x)
	}
}

func (s *sidecar) dropRetiring(r *retiring) {
	s.retire = slices.DeleteFunc(s.retire, func(x *retiring) bool { return x == r })
}

// retiringState is the retiring leases as state.json lists them.
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
