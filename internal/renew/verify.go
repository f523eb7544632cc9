package renew

import (
	"context"
	"time"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// verifier is --verify-interval: between renewals, it asks Vault whether
// the token and every lease still exist, so that an operator's `vault
// lease revoke` or `vault token revoke` turns /readyz 503 and gets the
// credential replaced within one interval instead of at the next renewal.
// It costs one lookup-self plus one sys/leases/lookup per leased secret
// every interval.
type verifier struct {
	next   time.Time // zero: off
	leases bool      // false once sys/leases/lookup was refused: token only
}

// verifyStep checks the token, then every live lease of the current
// token, and schedules the next check.
func (s *sidecar) verifyStep(ctx context.Context) error {
	v := &s.verify
	v.next = time.Now().Add(s.cfg.VerifyInterval)
	if s.tok.lost {
		return nil
	}
	actx, cancel := attempt(ctx, s.tok.expiry)
	_, err := s.tok.client.Auth().Token().LookupSelfWithContext(actx)
	cancel()
	now := time.Now()
	if ctx.Err() != nil {
		return nil
	}
	if tokenVerdict(err) == verdictGone {
		s.metrics.tokenFailures.Add(1)
		s.tokenLost(now, "Vault refused it when --verify-interval checked it ("+vaultclient.Cause(err)+")", true)
		return nil
	}
	if !v.leases {
		return nil
	}
	for _, g := range s.groups {
		if g.kind != state.KindLeased || g.gone || g.owner != s.tok.id {
			continue
		}
		actx, cancel := attempt(ctx, s.expiry(g))
		_, err := s.tok.client.Sys().LookupWithContext(actx, g.leaseID())
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch leaseVerdict(err) {
		case verdictGone:
			// Counted as a failed renewal: the lease can no longer be extended.
			s.metrics.failed(g, opRenew)
			s.log.Warn("--verify-interval: Vault no longer knows the lease (revoked or expired): issuing a new credential", "secret", g.names(), "lease_id", g.leaseID(), "err", vaultclient.Cause(err))
			s.markLost(g, lossRevoked)
			g.act, g.next = actRotate, time.Now()
		case verdictForbidden:
			v.leases = false
			s.log.Warn("--verify-interval: permission denied looking up leases; checking only the token from now on: allow update on sys/leases/lookup in the policy", "err", vaultclient.Cause(err))
			return nil
		case verdictUnknown:
			s.log.Debug("--verify-interval: lease lookup failed; the next renewal tells", "secret", g.names(), "lease_id", g.leaseID(), "err", vaultclient.Cause(err))
		}
	}
	return nil
}
