package renew

import (
	"context"
	"slices"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// oldToken is a token replaced by a new login, kept for the grace period
// so that the credentials issued under it stay valid while the app picks
// up the new files; revoking it revokes its leases too.
type oldToken struct {
	accessor string      // tokenID
	client   *api.Client // carries the old token
	expiry   time.Time
	revokeAt time.Time
	owned    bool      // podlease's to revoke (not a token the user supplied, not a batch token)
	next     time.Time // a retry after a failed revocation
	retry    retry
}

// oldToken returns the replaced token with this tokenID, nil if there is
// none (the current token, or one already revoked).
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
// which revokes the leases issued under it; or, once it expired, forgets
// it and marks lost what was still issued under it.
func (s *sidecar) oldTokenStep(ctx context.Context, o *oldToken) error {
	now := time.Now()
	if !now.Before(o.expiry) {
		s.log.Debug("the old token expired before its revocation", "token_accessor", o.accessor)
		s.markOwnedLost(o.accessor)
		s.dropOldToken(o)
		return s.save(ctx)
	}
	actx, cancel := attempt(ctx, time.Time{})
	err := o.client.Auth().Token().RevokeSelfWithContext(actx, "")
	cancel()
	now = time.Now()
	if err != nil && classify(err) == failRefused && !vaultclient.TokenInvalid(err) {
		// A live token whose policy lacks revoke-self: it and the
		// leases issued under it end at its expiry, and stay listed
		// for vault-revoke until then.
		o.next = o.expiry
		s.log.Warn("cannot revoke the old token: its policy does not allow auth/token/revoke-self (Vault's default policy does); it and the leases issued under it end at its expiry", "token_accessor", o.accessor, "expires_in", until(now, o.expiry))
		return nil
	}
	// Refused as invalid: the token is already gone.
	if err != nil && classify(err) != failRefused {
		if ctx.Err() != nil {
			return nil
		}
		o.next = s.retryAt(now, &o.retry, o.expiry, classify(err) != failRetry, false)
		s.warnRetry(&o.retry, now, err, "revoking the old token failed; retrying", "token_accessor", o.accessor, "err", vaultclient.Cause(err), "retry_in", until(now, o.next))
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
// pod is ending: nobody else knows these tokens. Each request may take at
// most half of the time left, so that one that gets no answer leaves time
// for the others.
func (s *sidecar) revokeOldTokens(ctx context.Context) {
	for _, o := range slices.Clone(s.old) {
		if !o.owned {
			continue
		}
		rctx, cancel := vaultclient.HalfTheTimeLeft(ctx)
		err := o.client.Auth().Token().RevokeSelfWithContext(rctx, "")
		cancel()
		if err != nil && !vaultclient.TokenInvalid(err) {
			s.log.Warn("could not revoke an old token; it and its leases expire at their TTL", "token_accessor", o.accessor, "err", vaultclient.Cause(err))
			continue
		}
		s.log.Info("revoked an old token and the leases issued under it", "token_accessor", o.accessor)
		s.dropOldToken(o)
	}
}
