package initcmd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podlease/podlease/internal/state"
)

// TestRunRevokesAnInterruptedRun: a run killed after it logged in leaves
// its token in the journal and maybe temporary files; the next run
// revokes that token (and with it the killed run's leases), removes the
// temporary files and leaves no journal behind.
func TestRunRevokesAnInterruptedRun(t *testing.T) {
	t.Parallel()
	f := &fakeVault{}
	addr := f.start(t)
	d := newDirs(t)
	for _, dir := range []string{d.secrets, d.state} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	left := map[string]string{
		filepath.Join(d.state, pendingName):          fakeToken,
		filepath.Join(d.secrets, ".db.tmp-123"):      "half a credential",
		filepath.Join(d.state, ".state.json.tmp-45"): "{",
		filepath.Join(d.secrets, ".other.tmp-6"):     "not ours: kept",
	}
	for p, content := range left {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := append(d.flags(), "--role", "web", "--jwt-file", jwtFile, "--secret", "db=database/creds/app")
	r := runInit(t, args, map[string]string{"VAULT_ADDR": addr})
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	if n := f.count("PUT /v1/auth/token/revoke-self"); n != 1 {
		t.Errorf("%d token revocations, want 1 (the interrupted run's)", n)
	}
	if !strings.Contains(r.stderr, "revoked the token of an interrupted earlier run") {
		t.Errorf("the log should say what was revoked:\n%s", r.stderr)
	}
	if got := files(t, d.secrets); !slices.Equal(got, []string{".other.tmp-6", "db"}) {
		t.Errorf("secrets dir holds %v, want the new file and the unrelated one", got)
	}
	if got := files(t, d.state); !slices.Equal(got, []string{".lock", state.FileName, state.TokenName}) {
		t.Errorf("state dir holds %v, want no journal and no temporary file", got)
	}
}

// TestRunRevokesACompletedEarlierRun: running again on a state dir that
// holds a complete earlier run (a pod restart, or a kill after the state
// was written) revokes the earlier token before replacing its state.
func TestRunRevokesACompletedEarlierRun(t *testing.T) {
	t.Parallel()
	f := &fakeVault{}
	addr := f.start(t)
	d := newDirs(t)
	args := append(d.flags(), "--role", "web", "--jwt-file", jwtFile, "--secret", "kv=secret/data/app")
	env := map[string]string{"VAULT_ADDR": addr}
	if r := runInit(t, args, env); r.code != 0 {
		t.Fatalf("first run: exit %d:\n%s", r.code, r.stderr)
	}
	r := runInit(t, args, env)
	if r.code != 0 {
		t.Fatalf("second run: exit %d:\n%s", r.code, r.stderr)
	}
	if n := f.count("PUT /v1/auth/token/revoke-self"); n != 1 {
		t.Errorf("%d token revocations, want 1 (the first run's)", n)
	}
	st, err := state.Load(d.state)
	if err != nil || st.RevokedAt != nil || len(st.Secrets) != 1 {
		t.Errorf("state after the second run: %+v, %v", st, err)
	}
}
