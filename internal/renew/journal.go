package renew

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
)

// The state dir as vault-renew keeps it: state.json written from the
// state in memory after every change, a commit journaled in it while
// files are replaced, and a journal an interrupted run left finished at
// start.

// stateInMemory is the state vault-renew holds: what it loaded, with the
// current token, every secret's current credential, the retiring leases
// and a commit's pending ones.
func (s *sidecar) stateInMemory() *state.State {
	st := *s.base
	s.overlay(&st)
	return &st
}

// overlay replaces in st what vault-renew owns.
func (s *sidecar) overlay(st *state.State) {
	st.Token = s.tok.info
	st.Secrets = s.secretsState()
	st.Retiring = s.retiringState()
	st.Pending = s.pending
}

// secretsState is the secrets as state.json lists them.
func (s *sidecar) secretsState() []state.Secret {
	out := make([]state.Secret, len(s.secrets))
	for i, sec := range s.secrets {
		out[i] = *sec
	}
	return out
}

// checkRevoked reads state.json: once vault-revoke ran, nothing may be
// renewed, rotated or issued again. Only revoked_at says that: a state
// file that vanished or cannot be read is not a revocation, so the state
// in memory (which is authoritative) is written again.
func (s *sidecar) checkRevoked() error {
	disk, err := state.Load(s.dir)
	switch {
	case err == nil && disk.RevokedAt != nil:
		return errRevoked
	case err == nil:
		return nil
	case errors.Is(err, state.ErrNotExist):
		s.log.Warn("state.json is gone; that is not a revocation (vault-revoke marks it revoked_at): writing it again from the state in memory", "state_dir", s.dir)
	default:
		s.log.Warn("cannot read state.json; writing it again from the state in memory", "err", err)
	}
	return s.save(context.Background())
}

// loadForWrite reads state.json under the lock before a write: it returns
// errRevoked once vault-revoke ran, and nil state (write ours) if the file
// is gone or cannot be read.
func (s *sidecar) loadForWrite() (*state.State, error) {
	disk, err := state.Load(s.dir)
	switch {
	case errors.Is(err, state.ErrNotExist):
		return nil, nil
	case err != nil:
		s.log.Warn("cannot read state.json before writing it; writing the state in memory", "err", err)
		return nil, nil
	case disk.RevokedAt != nil:
		return nil, errRevoked
	}
	return disk, nil
}

// writeState saves state.json: what is on disk (nil: what was loaded),
// with the token, secrets, retiring and pending leases replaced by the
// ones in memory.
func (s *sidecar) writeState(disk *state.State) error {
	merged := s.stateInMemory()
	if disk != nil {
		d := *disk
		s.overlay(&d)
		merged = &d
	}
	saveErr := state.Save(s.dir, merged)
	if saveErr != nil {
		s.log.Error("cannot save state.json; the state in memory is saved again at the next change", "err", saveErr)
	}
	// A token file that vanished is written again too, for a later
	// vault-revoke to find.
	if _, err := state.ReadToken(s.dir); errors.Is(err, os.ErrNotExist) {
		s.log.Warn("the token file is gone; writing it again from memory", "state_dir", s.dir)
		if err := state.WriteToken(s.dir, s.tok.token); err != nil {
			s.log.Error("cannot write the token file", "err", err)
		}
	}
	return saveErr
}

// save writes state.json after a renewal.
func (s *sidecar) save(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	unlock, err := state.Lock(wctx, s.dir)
	if err != nil {
		s.log.Warn("cannot lock the state dir to save state.json; saving at the next change", "err", err)
		return nil
	}
	defer unlock()
	disk, err := s.loadForWrite()
	if err != nil {
		return err
	}
	_ = s.writeState(disk) // logged; saved again at the next change
	return nil
}

// pendingRecords are the state entries the leased credentials of changes
// will have once written: commit journals them in state.json before it
// replaces the files.
func pendingRecords(changes []*change) []state.Secret {
	var out []state.Secret
	for _, ch := range changes {
		if ch.f.Resp.LeaseID == "" {
			continue
		}
		for _, sec := range ch.g.secrets {
			// next.FileInode stays the inode of the file it replaces.
			next := *sec
			secrets.Record(&next, ch.f)
			out = append(out, next)
		}
	}
	return out
}

// recoverPending finishes a commit that a crash interrupted, before
// anything else runs: a pending credential whose file holds it (the file
// is no longer the one state.json recorded: another inode) becomes the
// secret's current one and the lease it replaced is retired after the
// grace period; a pending credential that never reached its file is
// revoked at once. Either way no lease is left that state.json
// does not name, and the app keeps the credential its file holds.
func recoverPending(ctx context.Context, dir string, grace time.Duration, log *slog.Logger) (*state.State, error) {
	ctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	unlock, err := state.Lock(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := state.Load(dir)
	if err != nil || len(st.Pending) == 0 || st.RevokedAt != nil {
		return st, err
	}
	now := time.Now().UTC()
	for _, p := range st.Pending {
		cur := st.Lookup(p.Name)
		// Only this process writes the file, by renaming a new one over
		// it: a file with another inode was written by the interrupted
		// commit, and holds the pending credential.
		ino := state.Inode(p.File)
		if cur != nil && ino != 0 && ino != cur.FileInode {
			if cur.LeaseID != "" && cur.LeaseID != p.LeaseID {
				st.Retiring = append(st.Retiring, state.Retiring{Secret: p.Name, LeaseID: cur.LeaseID, RevokeAt: revokeAfterGrace(now, endBy(cur.ExpiresAt, statePrecision), grace, 0)})
			}
			*cur = p
			cur.FileInode = ino
			log.Info("adopted a credential that an interrupted run wrote but did not record", "secret", p.Name, "lease_id", p.LeaseID)
			continue
		}
		st.Retiring = append(st.Retiring, state.Retiring{Secret: p.Name, LeaseID: p.LeaseID, RevokeAt: now})
		log.Info("revoking a credential that an interrupted run fetched but never wrote", "secret", p.Name, "lease_id", p.LeaseID)
	}
	st.Pending = nil
	if err := state.Save(dir, st); err != nil {
		return nil, fmt.Errorf("finish an interrupted rotation: %w", err)
	}
	return st, nil
}
