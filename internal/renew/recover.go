package renew

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
)

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
				revokeAt := now.Add(grace)
				if !cur.ExpiresAt.IsZero() {
					revokeAt = latest(now, earliest(revokeAt, cur.ExpiresAt.Add(-time.Second)))
				}
				st.Retiring = append(st.Retiring, state.Retiring{Secret: p.Name, LeaseID: cur.LeaseID, RevokeAt: revokeAt})
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
