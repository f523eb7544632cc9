package renew

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/login"
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
	owned    bool      // podlease's to revoke (not a token the user supplied)
	next     time.Time // a retry after a failed revocation
	retry    retry
}

func (s *sidecar) tokenStep(ctx context.Context) error {
	t := s.tok
	now := time.Now()
	// At start the expiry is a wall-clock time from state.json, which a
	// clock jump can make look past: the lookup asks Vault instead.
	if !t.lost && t.act != tokLookup && !t.expiry.IsZero() && !now.Before(t.expiry) {
		if err := s.tokenLost(now, "it expired", false); err != nil {
			return err
		}
	}
	switch t.act {
	case tokLookup:
		return s.lookupToken(ctx)
	case tokRenew:
		return s.renewToken(ctx)
	case tokLogin:
		return s.relogin(ctx)
	}
	return nil
}

// lookupToken learns the token's real TTL, renewability and explicit max
// TTL at start, then renews it at once: a renewal that comes back shorter
// than asked reveals the max TTL early.
func (s *sidecar) lookupToken(ctx context.Context) error {
	t := s.tok
	actx, cancel := attempt(ctx, s.tok.expiry)
	sec, err := s.client.Auth().Token().LookupSelfWithContext(actx)
	cancel()
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.tokenFailures.Add(1)
		if code := vaultclient.StatusCode(err); code == 403 || code == 401 {
			return s.tokenLost(now, "Vault refused it ("+vaultclient.Cause(err)+")", true)
		}
		s.warnVault(err, "cannot look up the token; renewing it on the schedule from state.json", "token_accessor", s.st.Token.Accessor, "err", vaultclient.Cause(err))
		t.act = tokRenew
		t.next = s.retryAt(now, &t.retry, t.expiry, !vaultclient.Transient(err), false)
		return nil
	}
	if sec == nil || sec.Data == nil {
		t.act, t.next = tokRenew, now
		return nil
	}
	ttl, _ := sec.TokenTTL()
	renewable, _ := sec.TokenIsRenewable()
	if c := seconds(sec.Data["creation_ttl"]); c > 0 {
		t.ttl = c
	}
	t.expiry = time.Time{}
	if ttl > 0 {
		t.expiry = now.Add(ttl)
	}
	if explicit := seconds(sec.Data["explicit_max_ttl"]); explicit > 0 {
		if issued, err := time.Parse(time.RFC3339Nano, str(sec.Data["issue_time"])); err == nil {
			t.hard = issued.Add(explicit)
		}
	}
	s.st.Token.Renewable = renewable
	s.log.Info("token looked up", "token_accessor", s.st.Token.Accessor, "ttl", ttl, "renewable", renewable, "creation_ttl", t.ttl, "explicit_max_ttl_ends_in", until(now, t.hard))
	switch {
	case t.expiry.IsZero():
		s.log.Info("the token never expires: nothing to renew", "token_accessor", s.st.Token.Accessor)
		t.act = tokIdle
	case !renewable:
		t.hard = t.expiry
		s.scheduleToken(now)
	case seconds(sec.Data["period"]) > 0:
		// A periodic token is renewed by its period, forever; Vault
		// ignores the increment asked for.
		t.ttl = seconds(sec.Data["period"])
		t.act, t.next = tokRenew, now
	default:
		// Renew at once, asking for as long as the longest lease: a
		// shorter answer reveals a max TTL that ends before the leases,
		// worth a warning now rather than at the first capped renewal.
		t.act, t.next = tokRenew, now
		for _, g := range s.groups {
			if g.kind == state.KindLeased && !g.gone {
				t.probe = max(t.probe, g.expiry.Sub(now).Round(time.Second))
			}
		}
	}
	s.warnShortToken(now)
	return nil
}

// renewToken renews the token and checks that it grew as asked.
func (s *sidecar) renewToken(ctx context.Context) error {
	t := s.tok
	inc := max(t.ttl, t.probe)
	if inc <= 0 {
		inc = time.Until(t.expiry).Round(time.Second)
	}
	actx, cancel := attempt(ctx, s.tok.expiry)
	sec, err := s.client.Auth().Token().RenewSelfWithContext(actx, secs(inc))
	cancel()
	now := time.Now()
	if err == nil && (sec == nil || sec.Auth == nil) {
		err = errors.New("the renewal answer holds no auth data")
	}
	if err != nil {
		return s.tokenFailed(ctx, now, err)
	}
	got := time.Duration(sec.Auth.LeaseDuration) * time.Second
	t.expiry = now.Add(got)
	t.retry.reset()
	t.probe = 0
	s.metrics.tokenRenewals.Add(1)
	s.st.Token.TTL = sec.Auth.LeaseDuration
	s.st.Token.Renewable = sec.Auth.Renewable
	s.st.Token.ExpiresAt = t.expiry.UTC().Truncate(time.Second)
	if got < inc || !sec.Auth.Renewable {
		t.hard = t.expiry
		s.log.Info("token renewal came back shorter than asked: its max TTL is near; logging in again before it ends",
			"token_accessor", s.st.Token.Accessor, "asked", inc, "got", got, "login_in", until(now, t.hard.Add(-s.rotateBefore(t.ttl))))
	} else {
		s.log.Info("renewed token", "token_accessor", s.st.Token.Accessor, "ttl", got)
	}
	s.scheduleToken(now)
	s.warnShortToken(now)
	return s.save(ctx)
}

// tokenFailed handles a failed renewal.
func (s *sidecar) tokenFailed(ctx context.Context, now time.Time, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	t := s.tok
	s.metrics.tokenFailures.Add(1)
	switch code := vaultclient.StatusCode(err); {
	case code == 403 || code == 401:
		return s.tokenLost(now, "Vault refused to renew it ("+vaultclient.Cause(err)+")", true)
	case code == 400:
		// "token not renewable": live with its expiry.
		s.warnVault(err, "Vault will not renew the token; logging in again before it expires", "token_accessor", s.st.Token.Accessor, "expires_in", until(now, t.expiry), "err", vaultclient.Cause(err))
		t.hard = t.expiry
		s.scheduleToken(now)
	default:
		t.next = s.retryAt(now, &t.retry, t.expiry, !vaultclient.Transient(err), false)
		s.warnVault(err, "token renewal failed; retrying", "token_accessor", s.st.Token.Accessor, "err", vaultclient.Cause(err),
			"attempt", t.retry.fails, "retry_in", until(now, t.next), "token_expires_in", until(now, t.expiry))
	}
	return nil
}

// tokenDead reports whether the current token no longer works: Vault
// refused it, or its expiry passed.
func (s *sidecar) tokenDead(now time.Time) bool {
	t := s.tok
	return t.lost || t.act != tokLookup && !t.expiry.IsZero() && !now.Before(t.expiry)
}

// tokenLost notes that the token is dead (expired or refused): every lease
// issued under it is gone with it, so log in and re-issue them all.
// refused says Vault said so; otherwise the replaced leases are still
// revoked, in case they are alive after all.
func (s *sidecar) tokenLost(now time.Time, why string, refused bool) error {
	t := s.tok
	if !t.lost {
		s.log.Error("the token is no longer valid: "+why+"; its leases are gone with it, logging in again and issuing new credentials",
			"token_accessor", s.st.Token.Accessor)
		// At start there is nothing a restart would fix: log in instead.
		if s.cfg.ExitOnFailure && t.act != tokLookup {
			return &lostError{what: "the Vault token (" + s.tok.id + ")"}
		}
	}
	t.lost = true
	for _, g := range s.groups {
		if g.kind == state.KindLeased && g.owner == s.tok.id {
			g.gone = true
			g.vaultGone = g.vaultGone || refused
		}
	}
	t.act, t.next = tokLogin, now
	t.retry.reset()
	return nil
}

// scheduleToken sets the token's next action: renew at the fraction, or
// log in again rotate-before its hard expiry.
func (s *sidecar) scheduleToken(now time.Time) {
	t := s.tok
	if t.expiry.IsZero() {
		t.act = tokIdle
		return
	}
	if t.hard.IsZero() || t.expiry.Before(t.hard) {
		renew := s.renewAt(now, t.expiry)
		if t.hard.IsZero() || renew.Before(t.hard.Add(-s.rotateBefore(t.ttl))) {
			t.act, t.next = tokRenew, renew
			return
		}
	}
	t.act, t.next = tokLogin, latest(now, t.hard.Add(-s.rotateBefore(t.ttl)))
}

// relogin logs in again (re-reading the service-account token), re-issues
// every leased credential under the new token, switches to it, and
// schedules the old token's revocation after the grace period.
func (s *sidecar) relogin(ctx context.Context) error {
	t := s.tok
	actx, cancel := attempt(ctx, s.tok.expiry)
	res, err := login.Login(actx, s.client, s.st.Auth, s.getenv)
	cancel()
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.tokenFailures.Add(1)
		deadline := t.expiry
		if t.lost || !now.Before(deadline) {
			deadline = time.Time{}
		}
		t.next = s.retryAt(now, &t.retry, deadline, !vaultclient.Transient(err), t.lost)
		s.warnVault(err, "login failed; retrying", "err", err.Error(), "attempt", t.retry.fails, "retry_in", until(now, t.next), "token_expires_in", lifeLeft(now, t.expiry, t.lost))
		return nil
	}
	s.metrics.logins.Add(1)
	info := res.Info
	info.IssuedAt = now.UTC().Truncate(time.Second)
	info.ExpiresAt = now.Add(time.Duration(info.TTL) * time.Second).UTC().Truncate(time.Second)
	if res.Token == t.token {
		// The token auth method hands back the same token: nothing to
		// re-issue; it lives as long as it lives.
		s.log.Warn("login returned the same token (auth method token): it cannot be replaced; supply a fresh token in the token file before it expires",
			"token_accessor", info.Accessor, "expires_in", time.Duration(info.TTL)*time.Second)
		t.expiry = now.Add(time.Duration(info.TTL) * time.Second)
		t.hard, t.lost = t.expiry, false
		t.next = s.retryAt(now, &t.retry, time.Time{}, true, false)
		return nil
	}
	s.log.Info("logged in again", "method", s.st.Auth.Method, "mount", s.st.Auth.Mount, "role", s.st.Auth.Role,
		"token_id", tokenID(info.Accessor, res.Token), "token_ttl", time.Duration(info.TTL)*time.Second, "old_token_id", t.id)

	nc := s.client.WithNamespace(s.client.Namespace())
	nc.SetToken(res.Token)
	nt := &newToken{token: res.Token, id: tokenID(info.Accessor, res.Token), info: info, client: nc, at: now}
	if info.Batch() {
		s.log.Info("the new token is a batch token: it cannot be renewed or revoked; every leased credential is issued again under each new token before the old one ends, and replaced leases are revoked one by one",
			"token_id", nt.id, "token_ttl", time.Duration(info.TTL)*time.Second)
	}

	// Re-issue under the new token everything that lives and dies with
	// the old one, before the old one dies.
	var changes []*change
	deadline := t.expiry
	if t.lost {
		deadline = time.Time{}
	}
	for _, g := range s.groups {
		if g.kind != state.KindLeased || g.owner != s.tok.id {
			continue
		}
		ch, err := s.fetch(ctx, nc, nt.id, g, deadline)
		if err != nil {
			if ctx.Err() != nil {
				s.discard(changes, nt)
				return nil
			}
			s.metrics.failed(g, opReissue)
			g.act = actRotate
			g.next = s.retryAt(time.Now(), &g.retry, time.Time{}, !vaultclient.Transient(err), g.gone)
			s.warnVault(err, "could not re-issue a credential under the new token; retrying on its own", "secret", g.names(), "path", g.path, "err", err.Error(), "retry_in", until(time.Now(), g.next))
			continue
		}
		changes = append(changes, ch)
	}
	return s.commit(ctx, changes, nt)
}

// switchToken makes nt the current token; the old one is kept for the
// grace period if it is still alive and ours to revoke.
func (s *sidecar) switchToken(now time.Time, nt *newToken) {
	t := s.tok
	oldAcc := t.id
	if !t.lost && t.expiry.After(now) {
		oc := s.client.WithNamespace(s.client.Namespace())
		oc.SetToken(t.token)
		revokeAt := earliest(now.Add(s.cfg.Grace), t.expiry.Add(-time.Second))
		// A batch token cannot be revoked: it just ends, and the leases
		// replaced under it are revoked one by one.
		s.old = append(s.old, &oldToken{accessor: oldAcc, client: oc, expiry: t.expiry, revokeAt: latest(now, revokeAt), owned: s.st.Token.Owned && !t.batch})
	} else {
		// The old token is dead: so is every credential still issued
		// under it.
		for _, g := range s.groups {
			if g.kind == state.KindLeased && g.owner == oldAcc && !g.gone {
				g.gone = true
				s.log.Error("the old token ended before this credential could be re-issued under the new one: the credential in the file no longer works; still trying to issue a new one",
					"secret", g.names(), "lease_id", g.leaseID(), "old_token_accessor", oldAcc)
				if s.cfg.ExitOnFailure && s.fatal == nil {
					s.fatal = &lostError{what: fmt.Sprintf("secret %s (lease %s, with its token)", g.names(), g.leaseID())}
				}
			}
		}
	}
	s.client = nt.client
	s.st.Token = nt.info
	s.tok = &tokenItem{
		token:  nt.token,
		id:     nt.id,
		batch:  nt.info.Batch(),
		ttl:    time.Duration(nt.info.TTL) * time.Second,
		expiry: nt.at.Add(time.Duration(nt.info.TTL) * time.Second),
	}
	if nt.info.TTL == 0 {
		s.tok.expiry = time.Time{}
	}
	if !nt.info.Renewable {
		s.tok.hard = s.tok.expiry
	}
	s.scheduleToken(now)
	s.warnShortToken(now)
}

// warnShortToken warns once when the token's hard expiry comes before a
// lease it holds: every credential will then be re-issued each time the
// token is replaced.
func (s *sidecar) warnShortToken(now time.Time) {
	if s.warnedShortToken || s.tok.hard.IsZero() {
		return
	}
	for _, g := range s.groups {
		if g.kind == state.KindLeased && g.owner == s.tok.id && g.expiry.After(s.tok.hard) {
			s.warnedShortToken = true
			s.log.Warn("the token's max TTL is shorter than the leases it holds: Vault revokes leases with their token, so vault-renew logs in again and issues new credentials before each token ends; raise token_max_ttl of the auth role above the secrets' max TTL to keep one credential per pod",
				"secret", g.names(), "lease_expires_in", until(now, g.expiry), "token_expires_in", until(now, s.tok.hard),
				"method", s.st.Auth.Method, "mount", s.st.Auth.Mount, "role", s.st.Auth.Role)
			return
		}
	}
}

// retryAt schedules the next attempt after a failure. Before a deadline
// (when the credential expires; zero: none) the waits shrink to half the
// time left, so the last attempts come just before the credential would be
// lost.
func (s *sidecar) retryAt(now time.Time, r *retry, deadline time.Time, permanent, lost bool) time.Time {
	d := r.after(permanent, lost)
	if !deadline.IsZero() {
		left := deadline.Sub(now)
		if left <= 0 {
			return now
		}
		d = min(d, max(left/2, 100*time.Millisecond), left)
	}
	return now.Add(d)
}

// seconds reads a TTL field of a Vault response.
func seconds(v any) time.Duration {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return time.Duration(i) * time.Second
	case float64:
		return time.Duration(n) * time.Second
	case int:
		return time.Duration(n) * time.Second
	}
	return 0
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
