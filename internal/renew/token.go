package renew

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// tokenItem is the current token: the secret, the client that carries it,
// its state.json record and its schedule. A new login replaces the whole
// value (switchToken), so no field can lag behind another.
type tokenItem struct {
	token  string      // the secret itself: never logged
	id     string      // tokenID: who owns a lease; safe to log
	client *api.Client // carries token
	info   state.Token // what state.json records of it
	batch  bool        // a batch token: never renewed or revoked
	ttl    time.Duration
	expiry time.Time // zero: the token never expires
	hard   time.Time // when it can no longer be renewed; zero while unknown
	lost   bool      // expired or refused: its leases are gone
	probe  time.Duration
	act    tokenAction
	next   time.Time
	retry  retry
}

type tokenAction int

const (
	tokStart tokenAction = iota // at start: one request to check it and learn its real TTL
	tokRenew
	tokLogin
	tokIdle // never expires
)

// initialToken is the token vault-init left in the state dir, checked
// with Vault at once (startToken).
func initialToken(info state.Token, token string, client *api.Client, now time.Time) *tokenItem {
	t := &tokenItem{
		token: token, id: tokenID(info.Accessor, token), client: client, info: info,
		batch:  info.Batch() || info.Accessor == "",
		ttl:    time.Duration(info.TTL) * time.Second,
		expiry: info.ExpiresAt,
		act:    tokStart, next: now,
	}
	if info.TTL == 0 {
		t.expiry = time.Time{}
	}
	return t
}

// loggedInToken is a token from a new login at time at; its schedule is
// set by scheduleToken.
func loggedInToken(nt *newToken) *tokenItem {
	t := &tokenItem{
		token: nt.token, id: nt.id, client: nt.client, info: nt.info,
		batch: nt.info.Batch(),
		ttl:   time.Duration(nt.info.TTL) * time.Second,
	}
	if nt.info.TTL != 0 {
		t.expiry = nt.at.Add(t.ttl)
	}
	if !nt.info.Renewable {
		t.hard = t.expiry
	}
	return t
}

// tokenID names a token inside vault-renew: which token a lease belongs
// to, which old token a replaced lease goes with. It is the accessor; a
// batch token has none, so it is "batch-" and the start of the token's
// SHA-256, which tells two batch tokens apart and says nothing about the
// token (it is as random as the token, and far shorter). It is safe to
// log.
func tokenID(accessor, token string) string {
	if accessor != "" {
		return accessor
	}
	sum := sha256.Sum256([]byte(token))
	return "batch-" + hex.EncodeToString(sum[:6])
}

func (s *sidecar) tokenStep(ctx context.Context) error {
	t := s.tok
	now := time.Now()
	// At start the expiry is a wall-clock time from state.json, which a
	// clock jump can make look past: the first request asks Vault instead.
	if !t.lost && t.act != tokStart && !t.expiry.IsZero() && !now.Before(t.expiry) {
		s.tokenLost(now, "it expired", false)
		if s.exit != nil {
			return nil // no more work: the loop exits
		}
	}
	switch t.act {
	case tokStart:
		return s.startToken(ctx)
	case tokRenew:
		return s.renewToken(ctx)
	case tokLogin:
		return s.relogin(ctx)
	}
	return nil
}

// startToken makes vault-renew's one request at start, with the token
// vault-init left. state.json already holds the token's TTL and expiry,
// so the request is there to check that the token is alive (a sidecar
// restarted after a while may find it revoked or expired: it then logs in
// again) and to learn what state.json cannot say:
//   - a renewable token is renewed at once, asking for as long as the
//     longest lease: a shorter answer reveals a max TTL that ends before
//     the leases, worth a warning now rather than at the first capped
//     renewal;
//   - a token that cannot be renewed (a batch token, or one Vault made
//     non-renewable) is looked up, for the time it really has left.
//
// A token that never expires needs nothing.
func (s *sidecar) startToken(ctx context.Context) error {
	t := s.tok
	now := time.Now()
	switch {
	case t.expiry.IsZero():
		s.log.Info("the token never expires: nothing to renew", "token_accessor", t.info.Accessor)
		t.act = tokIdle
		return nil
	case t.batch || !t.info.Renewable:
		return s.lookupToken(ctx)
	}
	for _, g := range s.groups {
		if g.kind == state.KindLeased && !g.gone {
			t.probe = max(t.probe, g.expiry.Sub(now).Round(time.Second))
		}
	}
	return s.renewToken(ctx)
}

// lookupToken learns at start how long a token that cannot be renewed
// really has left, and schedules the login before it ends.
func (s *sidecar) lookupToken(ctx context.Context) error {
	t := s.tok
	actx, cancel := attempt(ctx, time.Time{})
	sent := time.Now()
	sec, err := t.client.Auth().Token().LookupSelfWithContext(actx)
	cancel()
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.tokenFailures.Add(1)
		if vaultclient.TokenInvalid(err) {
			s.tokenLost(now, "Vault refused it ("+vaultclient.Cause(err)+")", true)
			return nil
		}
		s.warnVault(err, "cannot look up the token; logging in again before the expiry state.json names", "token_accessor", t.info.Accessor, "err", vaultclient.Cause(err))
	} else if sec != nil && sec.Data != nil {
		if ttl, err := sec.TokenTTL(); err == nil && ttl > 0 {
			t.expiry = sent.Add(ttl)
		}
	}
	t.hard = t.expiry
	s.log.Info("the token cannot be renewed: logging in again before it ends", "token_id", t.id, "expires_in", until(now, t.expiry))
	s.scheduleToken(now)
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
	sent := time.Now()
	sec, err := hedged(ctx, s.log, "token renewal", []any{"token_accessor", t.info.Accessor}, t.expiry, t.client, s.hedge, func(ctx context.Context, c *api.Client) (*api.Secret, error) {
		return c.Auth().Token().RenewSelfWithContext(ctx, secs(inc))
	})
	now := time.Now()
	if err == nil && (sec == nil || sec.Auth == nil) {
		err = errors.New("the renewal answer holds no auth data")
	}
	if err != nil {
		s.tokenFailed(ctx, now, err)
		return nil
	}
	got := time.Duration(sec.Auth.LeaseDuration) * time.Second
	t.expiry = sent.Add(got) // Vault counts the TTL from when it handled the request
	t.retry.reset()
	t.probe = 0
	s.metrics.tokenRenewals.Add(1)
	t.info.TTL = sec.Auth.LeaseDuration
	t.info.Renewable = sec.Auth.Renewable
	t.info.ExpiresAt = t.expiry.UTC().Truncate(time.Second)
	if renewalCapped(inc, got, t.ttl, sec.Warnings) || !sec.Auth.Renewable {
		t.hard = t.expiry
		s.log.Info("token renewal came back shorter than asked: its max TTL is near; logging in again before it ends",
			"token_accessor", t.info.Accessor, "asked", inc, "got", got, "login_in", until(now, t.hard.Add(-rotateBefore(s.cfg.RotateBefore, t.ttl))))
	} else {
		s.log.Info("renewed token", "token_accessor", t.info.Accessor, "ttl", got)
	}
	s.scheduleToken(now)
	s.warnShortToken(now)
	return s.save(ctx)
}

// tokenFailed handles a failed renewal.
func (s *sidecar) tokenFailed(ctx context.Context, now time.Time, err error) {
	if ctx.Err() != nil {
		return
	}
	t := s.tok
	s.metrics.tokenFailures.Add(1)
	switch f := tokenRenewFailure(err); f {
	case failRefused:
		s.tokenLost(now, "Vault refused to renew it ("+vaultclient.Cause(err)+")", true)
	case failNotRenewable:
		s.warnVault(err, "Vault will not renew the token; logging in again before it expires", "token_accessor", t.info.Accessor, "expires_in", until(now, t.expiry), "err", vaultclient.Cause(err))
		t.hard = t.expiry
		s.scheduleToken(now)
	default:
		if t.act == tokStart {
			// Vault did not answer the first request: from now on the
			// expiry state.json gave counts.
			t.act = tokRenew
		}
		t.next = s.retryAt(now, &t.retry, t.expiry, f != failRetry, false)
		s.warnRetry(&t.retry, now, err, "token renewal failed; retrying", "token_accessor", t.info.Accessor, "err", vaultclient.Cause(err),
			"attempt", t.retry.fails, "retry_in", until(now, t.next), "token_expires_in", until(now, t.expiry))
	}
}

// tokenDead reports whether the current token no longer works: Vault
// refused it, or its expiry passed.
func (s *sidecar) tokenDead(now time.Time) bool {
	t := s.tok
	return t.lost || t.act != tokStart && !t.expiry.IsZero() && !now.Before(t.expiry)
}

// tokenLost notes that the token is dead (expired or refused): every lease
// issued under it is gone with it, so log in and re-issue them all.
// refused says Vault said so; otherwise the replaced leases are still
// revoked, in case they are alive after all. Under --exit-on-failure
// vault-renew exits for it, but not at start, where there is nothing a
// restart would fix: it logs in instead.
func (s *sidecar) tokenLost(now time.Time, why string, refused bool) {
	t := s.tok
	if !t.lost {
		s.log.Error("the token is no longer valid: "+why+"; its leases are gone with it, logging in again and issuing new credentials",
			"token_accessor", t.info.Accessor)
		if t.act != tokStart {
			s.exitOnLoss("the Vault token (" + t.id + ")")
		}
	}
	t.lost = true
	l := lossToken
	if refused {
		l = lossTokenRefused
	}
	for _, g := range s.groups {
		if g.kind == state.KindLeased && g.owner == t.id {
			s.markLost(g, l)
		}
	}
	t.act, t.next = tokLogin, now
	t.retry.reset()
}

// scheduleToken sets the token's next action (nextTokenAction).
func (s *sidecar) scheduleToken(now time.Time) {
	t := s.tok
	act, next := nextTokenAction(now, t.expiry, t.hard, t.ttl, s.cfg, rand.Float64())
	t.act = act
	if act != tokIdle {
		t.next = next
	}
}

// tokenRefused handles a 403 to a request made with the current token:
// Vault calls a revoked or expired token "invalid token" (since 1.17), and
// the token is then lost at once (it reports true); a plain "permission
// denied" is the policy refusing a live token, and costs no request to
// tell. Without it, a token revoked by hand would go unnoticed until its
// next renewal, or its next login when the max TTL is known.
func (s *sidecar) tokenRefused(now time.Time, err error) bool {
	if s.tok.lost || !vaultclient.TokenInvalid(err) {
		return false
	}
	s.metrics.tokenFailures.Add(1)
	s.tokenLost(now, "Vault refused a request made with it ("+vaultclient.Cause(err)+")", true)
	return true
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
			s.log.Warn("the token's max TTL is shorter than the leases it holds: Vault revokes leases with their token, so vault-renew logs in again and issues new credentials before each token ends; raise the auth role's token_max_ttl (and token_explicit_max_ttl, if set; the auth mount's max_lease_ttl caps both) above the secrets' max TTL to keep one credential per pod",
				"secret", g.names(), "lease_expires_in", until(now, g.expiry), "token_expires_in", until(now, s.tok.hard),
				"method", s.base.Auth.Method, "mount", s.base.Auth.Mount, "role", s.base.Auth.Role)
			return
		}
	}
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

func secs(d time.Duration) int { return int(d / time.Second) }
