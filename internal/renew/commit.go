package renew

import (
	"context"
	"slices"
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
		s.writeState(disk)
	}
	var changed []string
	for _, ch := range changes {
		failed, err := s.writeFiles(ch)
		if err != nil {
			s.log.Error("cannot write the secret file; the app keeps the current credential, trying again later", "secret", ch.g.names(), "err", err)
			s.abandon(now, []*change{ch}, nil)
			continue
		}
		if len(failed) > 0 {
			s.split(now, ch.g, failed)
		}
		s.apply(now, ch)
		if !ch.quiet {
			for _, sec := range ch.g.secrets {
				changed = append(changed, sec.Name)
			}
		}
	}
	s.pending = nil
	s.writeState(disk)
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

// writeFiles writes every file of a change. A failure on the first file
// leaves the group untouched (err); a failure on a later one is logged
// and returned in failed (indexes into the group's secrets), and the rest
// carries on: the files written before it may already be read with the
// new credential, so it is kept, and split gives the files that kept the
// old one a group of their own.
func (s *sidecar) writeFiles(ch *change) (failed []int, err error) {
	for i, sec := range ch.g.secrets {
		// Record on a copy: the state changes only in apply.
		next := *sec
		if err := secrets.WriteFile(&next, ch.contents[i]); err != nil {
			if i == 0 {
				return nil, err
			}
			s.log.Error("cannot write the secret file; it keeps the credential it holds, which is replaced on its own, with backoff", "secret", sec.Name, "file", sec.File, "err", err)
			failed = append(failed, i)
		}
	}
	return failed, nil
}

// split moves the secrets at idx (their files could not be written) out
// of g into a group of their own, which keeps g's current lease, the one
// their files still hold, while apply moves g to the new one. The lease
// stays alive as long as a group names it (apply retires only a lease no
// group names), its expiry counts on /readyz, and the new group replaces
// it like any credential due for replacement, after the backoff of a
// failed write and before the lease ends. The groups stay apart from then
// on, each with its own lease, as state.json records them.
func (s *sidecar) split(now time.Time, g *group, idx []int) {
	ng := &group{
		path: g.path, kind: g.kind, owner: g.owner, expiry: g.expiry, late: g.late, ld: g.ld,
		renewable: g.renewable, capped: g.capped, gone: g.gone, vaultGone: g.vaultGone, ident: g.ident,
		act: actRotate,
	}
	var keep []*state.Secret
	for i, sec := range g.secrets {
		if slices.Contains(idx, i) {
			ng.secrets = append(ng.secrets, sec)
		} else {
			keep = append(keep, sec)
		}
	}
	g.secrets = keep
	ng.next = s.retryAt(now, &ng.retry, s.expiry(ng), true, ng.gone)
	s.groups = slices.Insert(s.groups, slices.Index(s.groups, g)+1, ng)
	s.log.Warn("the files of one lease now hold different credentials: those written hold the new one, the others keep the current lease until a credential of their own replaces it",
		"secret", ng.names(), "lease_id", ng.leaseID(), "retry_in", until(now, ng.next), "lease_expires_in", lifeLeft(now, s.expiry(ng), ng.gone))
}

// leaseInUse reports whether a group's files hold the lease.
func (s *sidecar) leaseInUse(leaseID string) bool {
	for _, g := range s.groups {
		if g.leaseID() == leaseID {
			return true
		}
	}
	return false
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
	if !oldVaultGone && oldLease != "" && !s.leaseInUse(oldLease) {
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
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
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
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := client.Sys().RevokeWithContext(ctx, leaseID); err != nil {
		s.log.Warn("could not revoke an unused lease; it expires at its TTL", "secret", secret, "lease_id", leaseID, "err", vaultclient.Cause(err))
		return
	}
	s.log.Info("revoked an unused lease", "secret", secret, "lease_id", leaseID)
}
