// Package revocation ends a pod's credentials: it revokes every lease and
// the token recorded in the state directory, then removes the credential
// files. It is idempotent and bounded by its context, so it fits in a
// pod's termination grace period and a second run does nothing. The
// vault-revoke command (revokecmd), vault-renew --revoke-on-exit and
// vault-init's clean-up of an earlier run all call it.
package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// maxRequest bounds one HTTP request, so that a stalled connection leaves
// time for another try before the deadline.
const maxRequest = 5 * time.Second

// Revoke revokes the leases and the token recorded in dir, then removes
// the secret files (each NAME in secretsDir) and, once nothing is left to
// revoke, the token file. A state.json naming another secrets dir is
// still revoked in Vault, but no file is removed and an error says why.
// It marks state.json revoked first, so that vault-renew stops renewing
// and re-issuing. ctx bounds everything.
func Revoke(ctx context.Context, dir, secretsDir string, log *slog.Logger) error {
	return revokeDir(ctx, dir, secretsDir, nil, nil, log)
}

// RevokeKnown is Revoke for vault-renew --revoke-on-exit, which holds the
// state and the token in memory: it revokes what known names (and
// whatever state.json names besides) with token, even when state.json is
// gone, renamed or unreadable, and then records revoked_at. Only a
// state.json that already says revoked_at means vault-revoke did the work.
// client is the sidecar's own, carrying the token in memory.
func RevokeKnown(ctx context.Context, dir, secretsDir string, known *state.State, client *api.Client, log *slog.Logger) error {
	return revokeDir(ctx, dir, secretsDir, known, client, log)
}

// revokeDir revokes with client, or, when it is nil, with a client for
// the state's Vault address holding the token file's token.
func revokeDir(ctx context.Context, dir, secretsDir string, known *state.State, client *api.Client, log *slog.Logger) error {
	start := time.Now()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) && known == nil {
		log.Info("nothing to revoke: no state dir", "state_dir", dir)
		return nil
	}
	// Held to the end: a concurrent vault-revoke waits and then finds
	// the work done; vault-renew sees RevokedAt as soon as it gets in.
	unlock, err := state.Lock(ctx, dir)
	if err != nil {
		if known == nil {
			return err
		}
		log.Warn("cannot lock the state dir; revoking what vault-renew holds anyway", "err", err)
		unlock = func() {}
	}
	defer unlock()

	disk, err := state.Load(dir)
	var st *state.State
	switch {
	case known != nil && (err != nil || disk.RevokedAt == nil):
		if err != nil {
			log.Warn("state.json cannot be read; revoking what vault-renew holds in memory", "err", err)
			disk = nil
		}
		st = mergeKnown(known, disk)
	case errors.Is(err, state.ErrNotExist):
		if _, perr := os.Lstat(filepath.Join(dir, state.PendingName)); perr == nil {
			// The journal holds a token but not Vault's address, which
			// state.json would have named; the next vault-init, which
			// knows it, revokes that token first.
			return fmt.Errorf("no state.json in %s, but %s: a vault-init was interrupted after it logged in, and its token (and any lease it got) is alive: run vault-init again in this pod, which revokes them first; otherwise they end at their TTL",
				dir, filepath.Join(dir, state.PendingName))
		}
		log.Info("nothing to revoke: no state in the state dir", "state_dir", dir)
		return nil
	case err != nil:
		return err
	default:
		st = disk
	}
	tokenFile := filepath.Join(dir, state.TokenName)
	if st.RevokedAt != nil {
		if _, err := os.Stat(tokenFile); errors.Is(err, os.ErrNotExist) {
			log.Info("nothing to revoke: already revoked", "state_dir", dir, "revoked_at", st.RevokedAt.Format(time.RFC3339))
			// An earlier run may have failed to remove a secret file
			// (a read-only mount, a directory in its place): removing
			// is local and idempotent, so every run tries again.
			if st.CheckSecretsDir(secretsDir) != nil {
				return nil
			}
			return removeSecretFiles(st, log)
		}
		log.Info("an earlier run left work undone; trying again", "revoked_at", st.RevokedAt.Format(time.RFC3339))
	} else {
		now := time.Now().UTC().Truncate(time.Second)
		st.RevokedAt = &now
		if err := state.Save(dir, st); err != nil {
			if known == nil {
				return fmt.Errorf("mark the state revoked: %w", err)
			}
			log.Warn("cannot mark state.json revoked; revoking anyway", "err", err)
		}
	}

	r := &revoker{st: st, log: log, leases: leasesOf(st)}
	err = nil
	if client == nil {
		var token string
		token, err = state.ReadToken(dir)
		// Without a token file a later run cannot do better. Any other
		// failure may be this run's own (a VAULT_CACERT or
		// VAULT_CLIENT_CERT naming a file not mounted here), so the
		// token file stays for a run that can.
		r.noToken = errors.Is(err, os.ErrNotExist)
		if err == nil {
			client, err = clientFor(ctx, st, token, log)
		}
	}
	if err == nil {
		r.client = client
		r.revokeAll(ctx)
	}
	if err != nil {
		// Nothing could be revoked.
		if what := describe(r.leases, st.Token.Owned, st.Token.Accessor); what != "" {
			err = fmt.Errorf("%w: cannot revoke %s", err, what)
		}
		r.failed = []error{err}
	}

	var cleanupErr error
	if err := st.CheckSecretsDir(secretsDir); err != nil {
		cleanupErr = fmt.Errorf("secret files not removed: %w", err)
	} else {
		cleanupErr = r.removeFiles(tokenFile)
	}
	if err := r.result(dir); err != nil {
		return errors.Join(err, cleanupErr)
	}
	if cleanupErr != nil {
		return cleanupErr
	}
	log.Info("vault-revoke done", "leases", len(r.leases), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// mergeKnown is what vault-renew holds in memory, plus any lease that
// state.json on disk names and memory does not (the disk may be behind,
// never ahead, but revoking one lease too many costs nothing).
func mergeKnown(known, disk *state.State) *state.State {
	st := *known
	st.RevokedAt = nil
	if disk == nil {
		return &st
	}
	have := map[string]bool{}
	for _, l := range leasesOf(&st) {
		have[l.id] = true
	}
	for _, l := range leasesOf(disk) {
		if !have[l.id] {
			st.Retiring = append(slices.Clip(st.Retiring), state.Retiring{Secret: l.secret, LeaseID: l.id})
		}
	}
	return &st
}

// clientFor is a client for st's Vault holding token.
func clientFor(ctx context.Context, st *state.State, token string, log *slog.Logger) (*api.Client, error) {
	client, err := vaultclient.New(st.VaultAddr, st.Namespace, requestTimeout(ctx), log)
	if err != nil {
		return nil, err
	}
	client.SetToken(token)
	return client, nil
}

func requestTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(min(time.Until(dl), maxRequest), time.Millisecond)
	}
	return maxRequest
}

// lease is a lease to revoke and the secret it belongs to.
type lease struct {
	id, secret string
}

// leasesOf lists the live leases of s and the retiring ones, each once.
func leasesOf(s *state.State) []lease {
	var out []lease
	seen := map[string]bool{}
	add := func(id, secret string) {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, lease{id: id, secret: secret})
		}
	}
	for _, sec := range s.Secrets {
		add(sec.LeaseID, sec.Name)
	}
	for _, r := range s.Retiring {
		add(r.LeaseID, r.Secret)
	}
	for _, p := range s.Pending {
		add(p.LeaseID, p.Name)
	}
	return out
}

// revoker carries one revocation and what it achieved.
type revoker struct {
	client *api.Client
	st     *state.State
	log    *slog.Logger
	leases []lease

	left         []lease // not revoked because Vault could not be reached in time
	tokenLeft    bool    // the token is still alive for the same reason
	unreachable  error   // why
	failed       []error // permanent failures
	tokenRevoked bool    // the token is dead, by us or before us
	noToken      bool    // there is no token file to revoke with
}

// revokeAll revokes every lease, then the token. A lease whose revocation
// Vault keeps failing in its secrets engine (the database refuses to drop
// a user who owns objects, say) gets half the time left, not all of it:
// the other leases and the token still go, and it is reported. Vault then
// retries it itself, as the token's revocation leaves it to Vault. Any
// other failure (Vault unreachable, a failover) keeps being retried until
// the deadline.
func (r *revoker) revokeAll(ctx context.Context) {
	for i, l := range r.leases {
		revoke := func(ctx context.Context) error {
			return vaultclient.Retry(ctx, r.log, "revoke lease "+l.id, func(ctx context.Context) error {
				return r.client.Sys().RevokeWithContext(ctx, l.id)
			})
		}
		half, cancel := vaultclient.HalfTheTimeLeft(ctx)
		err := revoke(half)
		cancel()
		if err != nil && gaveUp(err) && !engineFailed(err) && ctx.Err() == nil {
			err = revoke(ctx)
		}
		switch {
		case err == nil:
			r.log.Info("revoked lease", "secret", l.secret, "lease_id", l.id)
		case leaseGone(err):
			r.log.Info("lease already gone", "secret", l.secret, "lease_id", l.id, "vault_said", vaultclient.Cause(err))
		case engineFailed(err) && ctx.Err() == nil:
			r.failed = append(r.failed, fmt.Errorf("revoke lease %s (secret %q): Vault's secrets engine kept failing to revoke it: %s", l.id, l.secret, vaultclient.Cause(err)))
		case gaveUp(err):
			r.left, r.tokenLeft, r.unreachable = r.leases[i:], r.st.Token.Owned, err
			return
		case vaultclient.StatusCode(err) == 403:
			// Every other lease would get the same answer.
			r.fallback(ctx, r.leases[i:])
			return
		default:
			r.failed = append(r.failed, fmt.Errorf("revoke lease %s (secret %q): %s", l.id, l.secret, vaultclient.Cause(err)))
		}
	}
	r.revokeToken(ctx)
}

// fallback handles a 403 from sys/leases/revoke: the token's policy does
// not allow it, or the token is already dead.
func (r *revoker) fallback(ctx context.Context, rest []lease) {
	acc := r.st.Token.Accessor
	if r.st.Token.Batch() {
		r.failed = append(r.failed, fmt.Errorf("permission denied revoking %s: the token is a batch token, which cannot be revoked, so its leases can only be revoked one by one: allow \"update\" on sys/leases/revoke in its policy; they end with the token at its TTL", describe(rest, false, "")))
		return
	}
	if !r.st.Token.Owned {
		err := vaultclient.Retry(ctx, r.log, "look up the token", func(ctx context.Context) error {
			_, err := r.client.Auth().Token().LookupSelfWithContext(ctx)
			return err
		})
		switch {
		case vaultclient.TokenInvalid(err):
			r.tokenRevoked = true
			r.log.Info("the token is no longer valid (expired or revoked): Vault revoked its leases with it", "token_accessor", acc)
		case gaveUp(err):
			r.left, r.unreachable = rest, err
		case err == nil:
			r.failed = append(r.failed, fmt.Errorf("permission denied revoking %s: the token was supplied by the user (--auth-method token), so vault-revoke does not revoke it; allow \"update\" on sys/leases/revoke in its policy", describe(rest, false, "")))
		default:
			r.failed = append(r.failed, fmt.Errorf("look up the token after a permission denied on sys/leases/revoke: %s", vaultclient.Cause(err)))
		}
		return
	}
	r.log.Info("sys/leases/revoke refused (permission denied): revoking the token instead, which revokes every lease it created", "token_accessor", acc, "leases", len(rest))
	r.revokeToken(ctx)
	switch {
	case r.tokenRevoked:
	case r.tokenLeft:
		r.left = rest
	default:
		r.failed = append(r.failed, fmt.Errorf("not revoked: %s", describe(rest, false, "")))
	}
}

func (r *revoker) revokeToken(ctx context.Context) {
	acc := r.st.Token.Accessor
	if !r.st.Token.Owned {
		r.log.Info("the token was supplied by the user (--auth-method token): not revoking it", "token_accessor", acc)
		return
	}
	if r.st.Token.Batch() {
		r.batchToken()
		return
	}
	err := vaultclient.Retry(ctx, r.log, "revoke the token", func(ctx context.Context) error {
		return r.client.Auth().Token().RevokeSelfWithContext(ctx, "")
	})
	switch {
	case err == nil:
		r.tokenRevoked = true
		r.log.Info("revoked the token", "token_accessor", acc)
	case vaultclient.TokenInvalid(err):
		r.tokenRevoked = true
		r.log.Info("the token was already invalid (expired or revoked): Vault revoked its leases with it", "token_accessor", acc, "vault_said", vaultclient.Cause(err))
	case gaveUp(err):
		r.tokenLeft, r.unreachable = true, err
	case batchRefused(err):
		// A state.json written before the token type was recorded.
		r.batchToken()
	case vaultclient.StatusCode(err) == 403:
		r.failed = append(r.failed, fmt.Errorf("permission denied revoking the token (accessor %s): its policy must allow \"update\" on auth/token/revoke-self, as Vault's default policy does (is token_no_default_policy set on the auth role?)", acc))
	default:
		r.failed = append(r.failed, fmt.Errorf("revoke the token (accessor %s): %s", acc, vaultclient.Cause(err)))
	}
}

// batchToken notes, once, that a batch token is not revoked: Vault cannot
// revoke one, and its leases were revoked one by one.
func (r *revoker) batchToken() {
	r.log.Info("the token is a batch token: Vault cannot revoke one, so its leases were revoked one by one; the token itself stays valid until its TTL ends, and its file is removed",
		"expires_at", r.st.Token.ExpiresAt.Format(time.RFC3339))
}

// batchRefused reports whether Vault refused to revoke a batch token.
func batchRefused(err error) bool {
	return vaultclient.StatusCode(err) == 400 && strings.Contains(strings.ToLower(vaultclient.Cause(err)), "batch token")
}

// removeFiles removes every secret file and, unless a later run could
// still revoke something with it, the token file.
func (r *revoker) removeFiles(tokenFile string) error {
	errs := []error{removeSecretFiles(r.st, r.log)}
	if r.retryable() {
		return errors.Join(errs...)
	}
	if err := os.Remove(tokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove token file: %w", err))
	}
	return errors.Join(errs...)
}

// removeSecretFiles removes the secret file of every secret of st; one
// already gone is no error.
func removeSecretFiles(st *state.State, log *slog.Logger) error {
	var errs []error
	for _, s := range st.Secrets {
		if s.File == "" {
			continue
		}
		switch err := os.Remove(s.File); {
		case err == nil:
			log.Info("removed secret file", "secret", s.Name, "file", s.File)
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, fmt.Errorf("remove secret file: %w (running vault-revoke again tries again)", err))
		}
	}
	return errors.Join(errs...)
}

// retryable says whether running vault-revoke again could still revoke
// something: the token may be alive, its file is there, and a lease or
// the token is left.
func (r *revoker) retryable() bool {
	return !r.noToken && !r.tokenRevoked && (len(r.left) > 0 || r.tokenLeft || len(r.failed) > 0)
}

// result is the error that says what is left, or nil.
func (r *revoker) result(dir string) error {
	var parts []string
	if r.unreachable != nil {
		s := fmt.Sprintf("vault %s: %v", r.st.VaultAddr, r.unreachable)
		if len(r.left) > 0 || r.tokenLeft {
			s += fmt.Sprintf(": not revoked: %s; they stay valid until their TTL runs out", describe(r.left, r.tokenLeft, r.st.Token.Accessor))
		}
		parts = append(parts, s)
	}
	for _, err := range r.failed {
		parts = append(parts, err.Error())
	}
	if len(parts) == 0 {
		return nil
	}
	msg := strings.Join(parts, "; ")
	switch {
	case r.retryable():
		msg += fmt.Sprintf(" (the token file stays in %s so that running vault-revoke again can finish)", dir)
	case r.tokenRevoked:
		msg += " (the token is revoked, so Vault keeps trying to revoke the leases it created in the background)"
	default:
		msg += " (whatever was not revoked expires at its TTL)"
	}
	return errors.New(msg)
}

// describe names leases (the first few) and the token for a message.
func describe(leases []lease, token bool, accessor string) string {
	var parts []string
	if n := len(leases); n > 0 {
		const show = 5
		ids := make([]string, 0, show)
		for _, l := range leases[:min(n, show)] {
			ids = append(ids, l.id)
		}
		s := fmt.Sprintf("%d lease", n)
		if n > 1 {
			s += "s"
		}
		s += " (" + strings.Join(ids, ", ")
		if n > show {
			s += fmt.Sprintf(" and %d more", n-show)
		}
		parts = append(parts, s+")")
	}
	if token {
		parts = append(parts, fmt.Sprintf("the token (accessor %s)", accessor))
	}
	return strings.Join(parts, " and ")
}

func gaveUp(err error) bool {
	var g *vaultclient.GaveUpError
	return errors.As(err, &g)
}

// engineFailed reports whether retries gave up on a lease whose last
// answer was Vault's secrets engine failing to revoke it: Vault answered,
// so the token and the other leases can still be revoked.
func engineFailed(err error) bool {
	var g *vaultclient.GaveUpError
	return errors.As(err, &g) && vaultclient.RevocationFailed(g.Last)
}

// leaseGone reports whether Vault says the lease no longer exists. Vault
// answers 204 to revoking an unknown lease; older versions and other
// lease endpoints answer 400 "invalid lease".
func leaseGone(err error) bool {
	if vaultclient.StatusCode(err) != 400 {
		return false
	}
	msg := strings.ToLower(vaultclient.Cause(err))
	return strings.Contains(msg, "invalid lease") || strings.Contains(msg, "lease not found")
}
