package renew

import (
	"context"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// commit writes freshly fetched credentials, and a new token if there is
// one, under the state lock: token file, secret files, then state.json.
// If vault-revoke ran meanwhile, it revokes what was fetched instead and
// returns errRevoked.
func (s *sidecar) commit(ctx context.Context, changes []*change, nt *newToken) error {
	// Finish what was fetched even if SIGTERM arrives now: a credential
	// issued but never written would only leak.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	now := time.Now()
	unlock, err := state.Lock(wctx, s.dir)
	if err != nil {
		s.log.Error("cannot lock the state dir; dropping the new credentials and trying again later", "err", err)
		s.abandon(now, changes, nt)
		return nil
	}
	defer unlock()
	disk, err := s.loadForWrite()
	if err != nil {
		s.discard(changes, nt)
		return err
	}
	if nt != nil {
		if err := state.WriteToken(s.dir, nt.token); err != nil {
			s.log.Error("cannot write the new token; keeping the old one and trying again later", "err", err)
			s.abandon(now, changes, nt)
			return nil
		}
		// Before apply: switchToken registers the replaced token as an
		// oldToken, and apply → retireLease finds it there, so that the
		// leases it held are revoked with it (one request) and no earlier
		// than it. TestReloginRevokesOldLeasesWithTheOldToken fails if
		// the order changes.
		s.switchToken(now, nt)
	}
	// Journal the new leases before their files change: a crash between
	// the rename and the final save must not leave a credential in a file
	// whose lease state.json does not name (recoverPending finishes it).
	if s.pending = pendingRecords(changes); len(s.pending) > 0 {
		if err := s.writeState(disk); err != nil {
			// Unjournaled, a credential in a file would be named nowhere
			// on disk if vault-renew died now: dropped instead (a new
			// token, already in its file, stays).
			s.pending = nil
			s.log.Error("cannot record the new credentials in state.json before writing their files; revoking them, the app keeps the current ones, trying again later", "err", err)
			s.abandon(now, changes, nil)
			return nil
		}
	}
	var changed []string
	for _, ch := range changes {
		if err := s.writeFiles(ch); err != nil {
			s.log.Error("cannot write the secret file; the app keeps the current credential, trying again later", "secret", ch.g.names(), "err", err)
			s.abandon(now, []*change{ch}, nil)
			continue
		}
		s.apply(now, ch)
		if !ch.quiet {
			for _, sec := range ch.g.secrets {
				changed = append(changed, sec.Name)
			}
		}
	}
	s.pending = nil
	_ = s.writeState(disk) // logged; saved again at the next change
	for _, name := range changed {
		s.notify.send(name)
	}
	return nil
}

// abandon revokes what could not be committed and schedules another try.
func (s *sidecar) abandon(now time.Time, changes []*change, nt *newToken) {
	s.discard(changes, nt)
	if nt != nil {
		s.tok.next = s.retryAt(now, &s.tok.retry, s.tok.expiry, true, s.tok.lost)
		return
	}
	for _, ch := range changes {
		deadline := ch.g.expiry
		if ch.g.gone || ch.g.kind != state.KindLeased {
			deadline = time.Time{}
		}
		ch.g.next = s.retryAt(now, &ch.g.retry, deadline, true, ch.g.gone)
	}
}

// writeFiles writes every file of a change. Only a failure on the first
// file leaves the group untouched; a later one is logged and the rest
// carries on, since the app may already read the new credential.
func (s *sidecar) writeFiles(ch *change) error {
	for i, sec := range ch.g.secrets {
		// Record on a copy: the state changes only in apply.
		next := *sec
		if err := secrets.WriteFile(&next, ch.contents[i]); err != nil {
			if i == 0 {
				return err
			}
			s.log.Error("cannot write the secret file", "secret", sec.Name, "file", sec.File, "err", err)
		}
	}
	return nil
}

// apply records a written change in memory and schedules what follows:
// the next renewal, and the old lease's revocation after the grace period.
func (s *sidecar) apply(now time.Time, ch *change) {
	g := ch.g
	oldLease, oldOwner, oldEnd, oldVaultGone := g.leaseID(), g.owner, endBy(s.expiry(g), g.late), g.vaultGone
	for _, sec := range g.secrets {
		secrets.Record(sec, ch.f)
		sec.FileInode = state.Inode(sec.File)
	}
	ttl := ch.f.TTL()
	g.kind, g.owner = ch.f.Kind, ch.owner
	g.expiry, g.late = time.Time{}, 0
	if ttl > 0 {
		// The answer came before now: at most that much later.
		g.expiry, g.late = ch.f.At.Add(ttl), now.Sub(ch.f.At)
	}
	if g.kind == state.KindLeased {
		g.ld = ttl
	}
	g.renewable = ch.f.Resp.Renewable
	g.capped, g.gone, g.vaultGone = false, false, false
	g.ident = fingerprint(ch.f)
	g.retry.reset()
	s.schedule(now, g)
	if !ch.quiet {
		s.metrics.rotated(g)
	}
	if g.kind == state.KindLeased {
		s.log.Info("replaced the credential: new lease, file rewritten", "secret", g.names(), "path", g.path, "lease_id", g.leaseID(),
			"ttl", ttl, "old_lease_id", oldLease, "next_renewal_in", until(now, g.next))
	} else {
		s.log.Info("secret changed: file rewritten", "secret", g.names(), "path", g.path, "notify", !ch.quiet)
	}
	// A replaced lease stays in the state until it is revoked or Vault
	// said it is gone: one that looks expired by the clock may be alive.
	if !oldVaultGone && oldLease != "" && oldLease != g.leaseID() {
		s.retireLease(now, g.secrets[0].Name, oldLease, oldOwner, oldEnd)
	}
}

// discard revokes credentials that were fetched but will never be used.
func (s *sidecar) discard(changes []*change, nt *newToken) {
	if nt != nil && nt.info.Batch() {
		// A batch token cannot be revoked: its leases one by one.
		for _, ch := range changes {
			s.revokeLease(ch.client, ch.f.Resp.LeaseID, ch.g.names())
		}
		return
	}
	if nt != nil {
		// Revoking the new token revokes every lease issued under it.
		ctx, cancel := s.cleanupContext()
		defer cancel()
		if err := nt.client.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
			s.log.Warn("could not revoke the unused new token; it and its leases expire at their TTL", "token_accessor", nt.info.Accessor, "err", vaultclient.Cause(err))
		} else {
			s.log.Info("revoked the unused new token and its leases", "token_accessor", nt.info.Accessor)
		}
		return
	}
	for _, ch := range changes {
		s.revokeLease(ch.client, ch.f.Resp.LeaseID, ch.g.names())
	}
}

// revokeLease revokes one lease, bounded, logging the outcome.
func (s *sidecar) revokeLease(client *api.Client, leaseID, secret string) {
	if leaseID == "" {
		return
	}
	ctx, cancel := s.cleanupContext()
	defer cancel()
	if err := client.Sys().RevokeWithContext(ctx, leaseID); err != nil {
		s.log.Warn("could not revoke an unused lease; it expires at its TTL", "secret", secret, "lease_id", leaseID, "err", vaultclient.Cause(err))
		return
	}
	s.log.Info("revoked an unused lease", "secret", secret, "lease_id", leaseID)
}

// cleanupContext bounds a revocation of credentials fetched but never
// used: cleanupTimeout, and once SIGTERM came, a third of what is left of
// --revoke-timeout, so that what --revoke-on-exit revokes afterwards (the
// credentials the app used) keeps the rest.
func (s *sidecar) cleanupContext() (context.Context, context.CancelFunc) {
	now := time.Now()
	d := now.Add(cleanupTimeout)
	if stopBy := s.stopBy.Load(); stopBy != 0 {
		// At least a sixth of the timeout: what was fetched must be
		// asked to go, even late.
		d = earliest(d, latest(now.Add(time.Unix(0, stopBy).Sub(now)/3), now.Add(s.cfg.RevokeTimeout/6)))
	}
	return context.WithDeadline(context.Background(), d)
}
