package renew

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/revocation"
	"github.com/podlease/podlease/internal/state"
)

// TestVaultRevokeIsNoticedAtOnce runs the real vault-revoke while
// vault-renew sleeps until a renewal an hour away.
func TestVaultRevokeIsNoticedAtOnce(t *testing.T) {
	t.Parallel()
	f, url := realFixture(t)
	time.Sleep(100 * time.Millisecond) // past the token renewal at start
	_, _, renewals, tokenRenewals := f.v.counts()
	if err := revocation.Revoke(context.Background(), f.stateDir, f.secretsDir, newTestLogger(f.logs)); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	waitFor(t, time.Second, func() bool { code, _ := httpGet(url + "/readyz"); return code == 503 })
	t.Logf("/readyz turned 503 %s after vault-revoke", time.Since(began).Round(time.Millisecond))
	code, body := httpGet(url + "/metrics")
	if code != 200 || !strings.Contains(body, "\npodlease_revoked 1\n") {
		t.Errorf("/metrics after vault-revoke lacks podlease_revoked 1")
	}
	if !f.running() {
		t.Fatal("vault-renew exited after vault-revoke; want it to wait for SIGTERM")
	}
	if _, _, r, tr := f.v.counts(); r != renewals || tr != tokenRenewals {
		t.Errorf("Vault calls after vault-revoke: renewals %d→%d, token renewals %d→%d", renewals, r, tokenRenewals, tr)
	}
	f.exitsPromptly()
}

// TestWatchSeesStateRenamedAway: renaming state.json to another name in
// the state dir is an IN_MOVED_FROM of state.json (and an IN_MOVED_TO of
// the other name); the watch must wake the loop for it.
func TestWatchSeesStateRenamedAway(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, state.FileName), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	wake, stop := watchState(dir, newTestLogger(&syncBuffer{}))
	defer stop()
	if wake == nil {
		t.Fatal("no inotify here")
	}
	if err := os.Rename(filepath.Join(dir, state.FileName), filepath.Join(dir, "elsewhere.json")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(2 * time.Second):
		t.Fatal("renaming state.json away did not wake the loop")
	}
}
