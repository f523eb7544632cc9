package renew

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
)

// TestRecoverPending: a rotation killed between journaling the new lease
// and recording it leaves state.json naming every live lease, and the
// restart settles on the credential the file actually holds.
func TestRecoverPending(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		fileHolds   string // "new": the rename happened; "old": it did not
		wantCurrent string
		wantRevoke  string // lease retired at once
		wantGrace   string // lease retired after the grace period
	}{
		{"killed after the file was replaced", "new", "lease/new", "", "lease/old"},
		{"killed before the file was replaced", "old", "lease/old", "lease/new", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, secretsDir := t.TempDir(), t.TempDir()
			oldContent, newContent := []byte(`{"username":"old"}`), []byte(`{"username":"new"}`)
			file := filepath.Join(secretsDir, "db")
			cur := state.Secret{Name: "db", Path: "database/creds/app", Kind: state.KindLeased, LeaseID: "lease/old",
				LeaseDuration: 60, File: file, FileMode: "0440", Format: "json",
				ExpiresAt: time.Now().Add(time.Minute).UTC()}
			if err := secrets.WriteFile(&cur, oldContent); err != nil {
				t.Fatal(err)
			}
			next := cur
			next.LeaseID = "lease/new"
			st := &state.State{VaultAddr: "http://127.0.0.1:1", SecretsDir: secretsDir, Secrets: []state.Secret{cur}, Pending: []state.Secret{next}}
			if err := state.Save(dir, st); err != nil {
				t.Fatal(err)
			}
			content := oldContent
			if tc.fileHolds == "new" {
				// The interrupted commit renamed a new file over the old.
				content = newContent
				if err := secrets.WriteFile(&next, newContent); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			got, err := recoverPending(context.Background(), dir, 30*time.Second, newTestLogger(&logs))
			if err != nil {
				t.Fatal(err)
			}
			disk, err := state.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []*state.State{got, disk} {
				if len(s.Pending) != 0 {
					t.Errorf("pending left: %+v", s.Pending)
				}
				if id := s.Lookup("db").LeaseID; id != tc.wantCurrent {
					t.Errorf("current lease %s, want %s", id, tc.wantCurrent)
				}
				if ino := s.Lookup("db").FileInode; ino != state.Inode(file) {
					t.Errorf("state's file_inode %d is not the file's %d", ino, state.Inode(file))
				}
				if b, _ := os.ReadFile(file); !bytes.Equal(b, content) {
					t.Errorf("the file changed")
				}
				retired := map[string]time.Duration{}
				for _, r := range s.Retiring {
					retired[r.LeaseID] = time.Until(r.RevokeAt)
				}
				if tc.wantRevoke != "" && retired[tc.wantRevoke] > time.Second {
					t.Errorf("%s should be revoked at once, revoke_at in %s", tc.wantRevoke, retired[tc.wantRevoke])
				}
				if tc.wantGrace != "" && retired[tc.wantGrace] < 20*time.Second {
					t.Errorf("%s should be kept for the grace period, revoke_at in %s", tc.wantGrace, retired[tc.wantGrace])
				}
				if len(retired) != 1 {
					t.Errorf("retiring %v, want exactly one lease", retired)
				}
			}
			if !strings.Contains(logs.String(), "interrupted run") {
				t.Errorf("the log should say what was recovered:\n%s", logs.String())
			}
		})
	}
}

// TestDamagedStateIsNotARevocation: with the inotify watch, a state.json
// that is renamed away, deleted or corrupted wakes the sidecar, which keeps
// renewing and writes the state again from memory; only revoked_at stops
// it.
func TestDamagedStateIsNotARevocation(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f, url := realFixture(t)
			lease := f.state().Secrets[0].LeaseID
			if err := d.do(f.stateDir); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, func() bool {
				st, err := state.Load(f.stateDir)
				_, terr := state.ReadToken(f.stateDir)
				return err == nil && st.Secrets[0].LeaseID == lease && st.RevokedAt == nil && terr == nil
			})
			if logs := f.logs.String(); strings.Contains(logs, "vault-revoke ran") {
				t.Errorf("the sidecar took a damaged state.json for a revocation:\n%s", logs)
			}
			if code, _ := httpGet(url + "/readyz"); code != 200 {
				t.Errorf("/readyz = %d after the damage; want 200", code)
			}
			if !f.running() {
				t.Fatal("vault-renew exited")
			}
		})
	}
}
