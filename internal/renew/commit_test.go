package renew

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podlease/podlease/internal/state"
)

// rotatingFixture is a pod whose 10s lease reaches its 20s max TTL, so
// that vault-renew replaces it at 15s.
func rotatingFixture(t *testing.T, args ...string) (*fakeVault, *fixture) {
	t.Helper()
	v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second })
	f.start(args...)
	return v, f
}

// TestUnwritableFileRevokesTheNewLeaseAndRetries: a new credential whose
// file cannot be written is revoked at once, the app keeps the current
// one, and the replacement is tried again.
func TestUnwritableFileRevokesTheNewLeaseAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := rotatingFixture(t)
		old := f.state().Secrets[0].LeaseID
		file := filepath.Join(f.secretsDir, "db")
		content, _ := os.ReadFile(file)
		time.Sleep(14 * time.Second)
		// A directory in the file's place: the rename onto it fails.
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(file, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // 16s: the replacement at 15s failed
		f.wantLog("cannot write the secret file")
		if _, issued, _, _ := v.counts(); issued != 2 {
			t.Fatalf("%d credentials issued; want the first and one replacement", issued)
		}
		if v.alive("database/creds/app/lease3") {
			t.Error("the credential that could not be written is still alive")
		}
		if got := f.state().Secrets[0].LeaseID; got != old {
			t.Errorf("state.json names lease %s; want the one in use, %s", got, old)
		}
		if err := os.RemoveAll(file); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, content, 0o440); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Second) // the retry comes before the 20s max TTL
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Errorf("no working credential in the file after the retry\nlogs:\n%s", f.logs)
		}
		f.stop()
	})
}

// TestHeldLockDropsTheNewCredentialAndRetries: while another podlease
// process holds the state dir's lock past the write timeout, the new
// credential is revoked rather than left unrecorded, and the replacement
// comes once the lock is free.
func TestHeldLockDropsTheNewCredentialAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := rotatingFixture(t)
		time.Sleep(14 * time.Second)
		unlock, err := state.Lock(context.Background(), f.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		// The capped renewal at 15s (5s before the 20s max TTL) cannot
		// save state.json for 5s; the replacement that follows cannot be
		// written by 25s.
		time.Sleep(12 * time.Second)
		f.wantLog("cannot lock the state dir; dropping the new credentials")
		if v.alive("database/creds/app/lease3") {
			t.Error("the dropped credential is still alive")
		}
		unlock()
		time.Sleep(permanentRetry*5/4 + time.Second) // the next try

		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Errorf("no working credential after the lock was released\nlogs:\n%s", f.logs)
		}
		f.stop()
	})
}

// markRevoked records in state.json that vault-revoke ran, as it does.
func markRevoked(t *testing.T, dir string) {
	st, err := state.Load(dir)
	if err != nil {
		t.Error(err)
		return
	}
	now := time.Now()
	st.RevokedAt = &now
	if err := state.Save(dir, st); err != nil {
		t.Error(err)
	}
}

// TestRevokedDuringRotationRevokesWhatWasFetched: vault-revoke runs while
// a replacement is being read; what was read is revoked, not written.
func TestRevokedDuringRotationRevokesWhatWasFetched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second })
		before, _ := f.creds("db")
		v.onRequest = func(path string) {
			if strings.HasPrefix(path, "database/creds/") {
				markRevoked(t, f.stateDir)
			}
		}
		f.start()
		time.Sleep(16 * time.Second)
		if v.alive("database/creds/app/lease3") {
			t.Error("the credential read after vault-revoke ran is alive")
		}
		f.wantLog("revoked an unused lease")
		if user, _ := f.creds("db"); user != before {
			t.Errorf("the file holds %s; want the credential vault-revoke found, %s", user, before)
		}
		if code, _ := f.get("/readyz"); code != 503 || !f.running() {
			t.Errorf("after vault-revoke: /readyz %d, running %v; want 503 and waiting for SIGTERM", code, f.running())
		}
		f.stop()
	})
}

// TestRevokedDuringReloginRevokesTheNewToken: vault-revoke runs while
// credentials are re-issued under a new token; the new token is revoked,
// and with it what was issued under it.
func TestRevokedDuringReloginRevokesTheNewToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second })
		v.onRequest = func(path string) {
			if strings.HasPrefix(path, "database/creds/") {
				markRevoked(t, f.stateDir)
			}
		}
		f.start()
		time.Sleep(20 * time.Second)
		logins, _, _, _ := v.counts()
		if logins != 2 {
			t.Fatalf("%d logins; want vault-init's and one by vault-renew", logins)
		}
		for _, acc := range []string{"accessor3"} {
			if v.tokenAlive(acc) {
				t.Errorf("the new token %s is alive after vault-revoke ran", acc)
			}
		}
		f.wantLog("revoked the unused new token")
		f.stop()
	})
}

// TestUnwritableTokenFileAtReloginRetries: a new token that cannot be
// written is revoked, the old one kept, and the login tried again.
func TestUnwritableTokenFileAtReloginRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = 10*time.Second, 40*time.Second })
		f.start()
		time.Sleep(time.Second)
		tokenFile := filepath.Join(f.stateDir, state.TokenName)
		token, _ := os.ReadFile(tokenFile)
		if err := os.Remove(tokenFile); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(tokenFile, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		// Login at 40s - 5s; each failed try revokes the new token.
		time.Sleep(35 * time.Second)
		f.wantLog("cannot write the new token")
		if v.tokenAlive("accessor3") {
			t.Error("the new token that could not be written is alive")
		}
		if err := os.RemoveAll(tokenFile); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, token, 0o600); err != nil {
			t.Fatal(err)
		}
		f.appLoop(10 * time.Second)
		if st := f.state(); st.Token.Accessor == "accessor1" {
			t.Errorf("state.json still names the first token after the retry\nlogs:\n%s", f.logs)
		}
		f.stop()
	})
}

// TestUnusedCredentialsVaultWillNotRevoke: what was fetched but cannot be
// used, and that Vault refuses to revoke, is logged as left to expire.
func TestUnusedCredentialsVaultWillNotRevoke(t *testing.T) {
	for _, tc := range []struct {
		name, path, log string
		v               func() (*fakeVault, *fixture)
	}{
		{"a new lease", "sys/leases/revoke", "could not revoke an unused lease; it expires at its TTL", func() (*fakeVault, *fixture) {
			v := newFakeVault()
			v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second
			return v, newFixture(t, v, dbSpec)
		}},
		{"a new token", "auth/token/revoke-self", "could not revoke the unused new token; it and its leases expire at their TTL", func() (*fakeVault, *fixture) {
			v := newFakeVault()
			v.tokenTTL, v.tokenMax = 10*time.Second, 20*time.Second
			return v, newFixture(t, v, dbSpec)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := tc.v()
				v.answer(tc.path, 503, "unavailable")
				v.onRequest = func(path string) {
					if strings.HasPrefix(path, "database/creds/") {
						markRevoked(t, f.stateDir)
					}
				}
				f.start()
				time.Sleep(20 * time.Second)
				f.wantLog(tc.log)
				f.stop()
			})
		})
	}
}

// TestRevokedDuringReloginWithBatchTokensRevokesEachLease: a batch token
// cannot be revoked, so what was issued under a new one that vault-revoke
// made useless is revoked lease by lease.
func TestRevokedDuringReloginWithBatchTokensRevokesEachLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.batch, v.tokenTTL, v.tokenMax = true, 20*time.Second, 20*time.Second })
		if !f.state().Token.Batch() {
			t.Fatal("vault-init's token is not a batch token")
		}
		v.onRequest = func(path string) {
			if strings.HasPrefix(path, "database/creds/") {
				markRevoked(t, f.stateDir)
			}
		}
		f.start()
		time.Sleep(16 * time.Second) // the login at 20s - 20s/3
		if logins, _, _, _ := v.counts(); logins != 2 {
			t.Fatalf("%d logins; want vault-init's and one by vault-renew\nlogs:\n%s", logins, f.logs)
		}
		if v.alive("database/creds/app/lease4") {
			t.Error("the lease issued under the new batch token is alive after vault-revoke ran")
		}
		f.wantLog("revoked an unused lease")
		f.stop()
	})
}

// TestUnsavableStateRevokesTheNewLeaseAndRetries: state.json cannot be
// written (here a directory in its place; on a full volume the same): the
// new credential is not put in the file, where after a crash no state
// would name it, but revoked, and the replacement is tried again once
// state.json can be saved.
func TestUnsavableStateRevokesTheNewLeaseAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := rotatingFixture(t)
		file := filepath.Join(f.secretsDir, "db")
		content, _ := os.ReadFile(file)
		time.Sleep(14 * time.Second)
		stateFile := filepath.Join(f.stateDir, state.FileName)
		saved, _ := os.ReadFile(stateFile)
		if err := os.Remove(stateFile); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(stateFile, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // 16s: the replacement at 15s failed
		f.wantLog("cannot record the new credentials in state.json")
		if v.alive("database/creds/app/lease3") {
			t.Error("the credential that could not be recorded is still alive")
		}
		if now, _ := os.ReadFile(file); !bytes.Equal(now, content) {
			t.Error("the file holds a credential state.json does not name")
		}
		if err := os.RemoveAll(stateFile); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(stateFile, saved, 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Second) // the retry comes before the 20s max TTL
		user, _ := f.creds("db")
		if !v.aliveUser(user) {
			t.Errorf("no working credential in the file after the retry\nlogs:\n%s", f.logs)
		}
		if got := f.state().Secrets[0].LeaseID; !v.alive(got) {
			t.Errorf("state.json names lease %s, which is not alive", got)
		}
		f.stop()
	})
}
