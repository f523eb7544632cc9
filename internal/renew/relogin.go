package renew

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/login"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// newToken is a fresh login not yet written to the state dir.
type newToken struct {
	token  string
	id     string // tokenID
	info   state.Token
	client *api.Client
	at     time.Time // when the login was sent: Vault counts the TTL from a moment after it
}

// relogin logs in again (re-reading the service-account token), re-issues
// every leased credential under the new token, and commits them with it:
// the new token becomes current and the old one is revoked after the
// grace period, with the leases issued under it.
func (s *sidecar) relogin(ctx context.Context) error {
	t := s.tok
	end := t.expiry
	if t.lost {
		end = time.Time{}
	}
	sent := time.Now()
	budget := loginTimeout(sent, end)
	actx, cancel := s.finishing(ctx, sent.Add(budget))
	res, err := login.Login(actx, t.client, s.base.Auth, s.getenv)
	timedOut := errors.Is(actx.Err(), context.DeadlineExceeded)
	cancel()
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.tokenFailures.Add(1)
		deadline := end
		permanent := !vaultclient.Transient(err)
		if !now.Before(deadline) || permanent {
			// A refused login is not retried more often near the end:
			// that cannot fix what someone must change in Vault, and
			// some methods (approle) lock the role out for everyone
			// after a few failed logins.
			deadline = time.Time{}
		}
		t.next = s.retryAt(now, &t.retry, deadline, permanent, t.lost)
		if timedOut {
			s.warnRetry(&t.retry, now, err, "login timed out: Vault did not answer in time; if it finishes the login anyway, that token is held by nobody and ends at its TTL; retrying",
				"timeout", budget, "attempt", t.retry.fails, "retry_in", until(now, t.next), "token_expires_in", lifeLeft(now, t.expiry, t.lost))
			return nil
		}
		s.warnRetry(&t.retry, now, err, "login failed; retrying", "err", err.Error(), "attempt", t.retry.fails, "retry_in", until(now, t.next), "token_expires_in", lifeLeft(now, t.expiry, t.lost))
		return nil
	}
	s.metrics.logins.Add(1)
	info := res.Info
	info.IssuedAt = sent.UTC().Truncate(time.Second)
	info.ExpiresAt = sent.Add(time.Duration(info.TTL) * time.Second).UTC().Truncate(time.Second)
	if res.Token == t.token {
		// The token auth method hands back the same token: nothing to
		// re-issue; it lives as long as it lives.
		s.log.Warn("login returned the same token (auth method token): it cannot be replaced; supply a fresh token in the token file before it expires",
			"token_accessor", info.Accessor, "expires_in", time.Duration(info.TTL)*time.Second)
		t.expiry = sent.Add(time.Duration(info.TTL) * time.Second)
		t.hard, t.lost = t.expiry, false
		t.next = s.retryAt(now, &t.retry, time.Time{}, true, false)
		return nil
	}
	s.log.Info("logged in again", "method", s.base.Auth.Method, "mount", s.base.Auth.Mount, "role", s.base.Auth.Role,
		"token_id", tokenID(info.Accessor, res.Token), "token_ttl", time.Duration(info.TTL)*time.Second, "old_token_id", t.id)

	nc := t.client.WithNamespace(t.client.Namespace())
	nc.SetToken(res.Token)
	nt := &newToken{token: res.Token, id: tokenID(info.Accessor, res.Token), info: info, client: nc, at: sent}
	if ctx.Err() != nil {
		s.discard(nil, nt) // SIGTERM came while the login was under way
		return nil
	}
	if info.Batch() {
		s.log.Info("the new token is a batch token: it cannot be renewed or revoked; every leased credential is issued again under each new token before the old one ends, and replaced leases are revoked one by one",
			"token_id", nt.id, "token_ttl", time.Duration(info.TTL)*time.Second)
	}

	// Re-issue under the new token everything that lives and dies with
	// the old one, before the old one dies (end), and any lease of the
	// token before it that a restart left to be re-issued.
	var changes []*change
	for _, g := range s.groups {
		if g.kind != state.KindLeased || g.owner != t.id && g.owner != earlierToken {
			continue
		}
		if ctx.Err() != nil {
			s.discard(changes, nt) // SIGTERM: nothing more is issued
			return nil
		}
		ch, err := s.fetch(ctx, nc, nt.id, g, end)
		if err != nil {
			if ctx.Err() != nil {
				s.discard(changes, nt)
				return nil
			}
			s.metrics.failed(g, opReissue)
			g.act = actRotate
			// Retried before the credential ends: with its lease, or with
			// the old token, whichever comes first (as rotate does).
			credEnd := s.expiry(g)
			if credEnd.IsZero() || !end.IsZero() && end.Before(credEnd) {
				credEnd = end
			}
			now := time.Now()
			g.next = s.retryAt(now, &g.retry, credEnd, !vaultclient.Transient(err), g.gone)
			s.warnRetry(&g.retry, now, err, "could not re-issue a credential under the new token; retrying on its own", "secret", g.names(), "path", g.path, "err", err.Error(),
				"attempt", g.retry.fails, "retry_in", until(now, g.next), "old_lease_expires_in", lifeLeft(now, credEnd, g.gone))
			continue
		}
		changes = append(changes, ch)
	}
	return s.commit(ctx, changes, nt)
}

// switchToken makes nt the current token. The old one is kept as an
// oldToken until the grace period ends if it is still alive (revoked then
// if it is ours to revoke); if it is dead, so is every credential still
// issued under it.
func (s *sidecar) switchToken(now time.Time, nt *newToken) {
	t := s.tok
	if !t.lost && t.expiry.After(now) {
		oc := t.client.WithNamespace(t.client.Namespace())
		oc.SetToken(t.token)
		// A batch token cannot be revoked: it just ends, and the leases
		// replaced under it are revoked one by one.
		s.old = append(s.old, &oldToken{accessor: t.id, client: oc, expiry: t.expiry,
			revokeAt: revokeAfterGrace(now, t.expiry, s.cfg.Grace, tokenRevokeLead), owned: t.info.Owned && !t.batch})
	} else {
		s.markOwnedLost(t.id)
	}
	s.tok = loggedInToken(nt)
	s.scheduleToken(now)
	s.warnShortToken(now)
}

// markOwnedLost marks lost every credential in use that was issued under
// the token tokenID, which ended.
func (s *sidecar) markOwnedLost(tokenID string) {
	for _, g := range s.groups {
		if g.kind == state.KindLeased && g.owner == tokenID {
			s.markLost(g, lossOldToken)
		}
	}
}
