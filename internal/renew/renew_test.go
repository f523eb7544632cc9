package renew

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/cli"
	"github.com/podlease/podlease/internal/state"
)

func TestVaultRevokeStopsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 10 * time.Second })
		f.start()
		time.Sleep(2 * time.Second)

		// What vault-revoke does to the state.
		unlock, err := state.Lock(context.Background(), f.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		st := f.state()
		now := time.Now().UTC()
		st.RevokedAt = &now
		if err := state.Save(f.stateDir, st); err != nil {
			t.Fatal(err)
		}
		unlock()
		logins0, issued0, renewals0, tokenRenewals0 := v.counts()

		time.Sleep(60 * time.Second)
		if l, i, r, tr := v.counts(); l != logins0 || i != issued0 || r != renewals0 || tr != tokenRenewals0 {
			t.Errorf("Vault calls after revoked_at: logins %d→%d, issued %d→%d, renewals %d→%d, token renewals %d→%d; want none",
				logins0, l, issued0, i, renewals0, r, tokenRenewals0, tr)
		}
		if !f.running() {
			t.Fatal("exited after vault-revoke; want it to wait for SIGTERM")
		}
		if code, body := f.get("/readyz"); code != 503 || !strings.Contains(body, "revoked") {
			t.Errorf("/readyz = %d %q; want 503 saying revoked", code, body)
		}
		if code, _ := f.get("/healthz"); code != 200 {
			t.Errorf("/healthz = %d; want 200", code)
		}
		if got := f.metric("podlease_revoked"); got != 1 {
			t.Errorf("podlease_revoked = %v; want 1", got)
		}
		if code := f.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
}

func TestVersionAndMissingState(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"--version"}, func(string) string { return "" }, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "vault-renew ") {
		t.Errorf("--version: exit %d, %q", code, out.String())
	}
	errb.Reset()
	code := Run(context.Background(), []string{"--state-dir", t.TempDir(), "--listen", ""}, func(string) string { return "" }, &out, &errb)
	if code != cli.ExitFailure || !strings.Contains(errb.String(), "vault-init must run first") {
		t.Errorf("empty state dir: exit %d, %q", code, errb.String())
	}
}

// TestMemoryLimitFlag: --memory-limit sets the Go runtime's soft limit
// once the flags are valid; without it the limit main set is left alone.
func TestMemoryLimitFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []int64
	}{
		{"given", []string{"--memory-limit", "64MiB"}, []int64{64 << 20}},
		{"off", []string{"--memory-limit", "off"}, []int64{math.MaxInt64}},
		{"not given", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, f := newDBFixture(t, nil)
				var mu sync.Mutex
				var set []int64
				f.startWith(deps{newClient: f.v.newClient, setMemoryLimit: func(n int64) int64 {
					mu.Lock()
					defer mu.Unlock()
					set = append(set, n)
					return 0
				}}, tc.args...)
				time.Sleep(time.Second)
				if !f.running() {
					t.Fatalf("vault-renew exited:\n%s", f.logs)
				}
				f.stop()
				mu.Lock()
				defer mu.Unlock()
				if !slices.Equal(set, tc.want) {
					t.Errorf("memory limits set: %v; want %v", set, tc.want)
				}
			})
		})
	}
}

// TestSettleAfterWork: after a round of work with the next action far
// enough ahead, vault-renew gives free memory back once; with actions
// always close, never.
func TestSettleAfterWork(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      time.Duration
		min, max int
	}{
		// A renewal every 14.6s at most: four rounds in a minute, and
		// once after the start.
		{"20s leases", 20 * time.Second, 4, 6},
		// A renewal every 2s: never 5s of sleep ahead.
		{"4s leases", 4 * time.Second, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = tc.ttl })
				var settled atomic.Int32
				f.startWith(deps{newClient: f.v.newClient, settle: func() { settled.Add(1) }})
				time.Sleep(time.Minute)
				if !f.running() {
					t.Fatalf("vault-renew exited:\n%s", f.logs)
				}
				f.stop()
				if n := int(settled.Load()); n < tc.min || n > tc.max {
					t.Errorf("settled %d times in a minute; want %d to %d", n, tc.min, tc.max)
				}
			})
		})
	}
}

// TestSecondSidecarOnOneStateDirExits: two sidecars on one state dir would
// both rotate the same leases; the second one exits at once, saying why.
func TestSecondSidecarOnOneStateDirExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL = 20 * time.Second })
		f.start()
		time.Sleep(time.Second)

		second := &fixture{t: t, v: v, dir: f.dir, stateDir: f.stateDir, secretsDir: f.secretsDir, logs: &syncBuffer{}, procRoot: f.procRoot}
		second.start()
		time.Sleep(time.Second)
		if second.running() {
			t.Fatal("a second vault-renew on the same state dir is still running")
		}
		if code := second.wait(); code != 1 {
			t.Errorf("second vault-renew exit code %d; want 1", code)
		}
		if logs := second.logs.String(); !strings.Contains(logs, "another vault-renew is running") || !strings.Contains(logs, "(pid ") {
			t.Errorf("the second vault-renew's message does not say another one holds the state dir:\n%s", logs)
		}
		_, issued0, _, _ := v.counts()
		time.Sleep(60 * time.Second) // rotations of the first sidecar only
		st := f.state()
		if !v.alive(st.Secrets[0].LeaseID) {
			t.Error("the first sidecar's credential died")
		}
		if _, issued, _, _ := v.counts(); issued-issued0 > 3 {
			t.Errorf("%d credentials issued in 60s of a 20s lease; want one sidecar's rotations", issued-issued0)
		}
		f.stop()
	})
}

// TestRevokeOnExitWithoutAReadableState: the sidecar holds the state in
// memory; on SIGTERM with --revoke-on-exit it revokes what it holds,
// whatever the disk says. Without a watch the damage is not even seen
// before SIGTERM.
func TestRevokeOnExitWithoutAReadableState(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f, _ := realFixtureWatch(t, false, "--revoke-on-exit")
			v, st := f.v, f.state()
			if err := d.do(f.stateDir); err != nil {
				t.Fatal(err)
			}
			f.exitsPromptly()
			if v.alive(st.Secrets[0].LeaseID) || v.tokenAlive(st.Token.Accessor) {
				t.Errorf("--revoke-on-exit left the lease (alive %v) or the token (alive %v)\nlogs:\n%s", v.alive(st.Secrets[0].LeaseID), v.tokenAlive(st.Token.Accessor), f.logs)
			}
			if _, err := os.Stat(filepath.Join(f.secretsDir, "db")); !os.IsNotExist(err) {
				t.Errorf("--revoke-on-exit left the secret file: %v", err)
			}
			if after, err := state.Load(f.stateDir); err != nil || after.RevokedAt == nil {
				t.Errorf("state.json does not record the revocation (%v)", err)
			}
			if logs := f.logs.String(); strings.Contains(logs, "nothing to revoke") {
				t.Errorf("the sidecar said there was nothing to revoke:\n%s", logs)
			}
		})
	}
}

// TestSIGTERMDuringARead: SIGTERM with --revoke-on-exit while a
// rotation's read is under way, after Vault issued the credential. Under
// a batch token, which cannot be revoked, the lease can only be revoked
// one by one, so the answer must not be thrown away: the read gets a
// moment more, and no lease outlives the pod.
func TestSIGTERMDuringARead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) {
			v.batch = true
			v.tokenTTL, v.tokenMax = 2*time.Hour, 2*time.Hour
			v.leaseTTL, v.leaseMax = 10*time.Minute, 10*time.Minute
		})
		f.start("--revoke-on-exit")
		v.mu.Lock()
		v.latency = time.Second // every answer comes a second after Vault acted
		v.mu.Unlock()
		for {
			if _, issued, _, _ := v.counts(); issued == 2 {
				break // the rotation's credential: its answer is on the way
			}
			time.Sleep(100 * time.Millisecond)
		}
		f.stop()
		v.mu.Lock()
		defer v.mu.Unlock()
		for id := range v.leases {
			if v.lease(id, time.Now()) != nil {
				t.Errorf("lease %s outlived the pod\n%s", id, f.logs)
			}
		}
	})
}

// TestStartRemovesStaleTemporaryFiles: a sidecar killed while writing a
// secret file left ".db.tmp-*", a credential's copy, in the directory
// the app reads; the next one removes it at start.
func TestStartRemovesStaleTemporaryFiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, f := newDBFixture(t, nil)
		stale := filepath.Join(f.secretsDir, ".db.tmp-12345")
		if err := os.WriteFile(stale, []byte(`{"password":"left"}`), 0o440); err != nil {
			t.Fatal(err)
		}
		f.start()
		time.Sleep(time.Second)
		if _, err := os.Stat(stale); !os.IsNotExist(err) {
			t.Errorf("the stale temporary file is still there (%v)", err)
		}
		f.wantLog("removed a temporary file left by an interrupted earlier run")
		f.stop()
	})
}

// TestShutdownWithinRevokeTimeout: SIGTERM while a re-login's re-issue
// waits on a read that gets no answer: the read's grace, the revocation
// of the unused new token and --revoke-on-exit all come out of
// --revoke-timeout (10s) counted from SIGTERM; and when Vault answers
// revocations, every token is revoked, the new one too.
func TestShutdownWithinRevokeTimeout(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hung  []string // paths that get no answer
		clean bool     // every token revoked
	}{
		{"only the read hangs", []string{"database/creds/app"}, true},
		{"revocations hang too", []string{"database/creds/app", "auth/token/revoke-self", "sys/leases/revoke"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = time.Hour, 90*time.Minute })
				f.start("--revoke-on-exit")
				time.Sleep(69 * time.Minute)
				v.mu.Lock()
				for _, p := range tc.hung {
					v.hang[p] = 1000
				}
				v.mu.Unlock()
				for logins, _, _, _ := v.counts(); logins < 2; logins, _, _, _ = v.counts() {
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(time.Second) // the re-issue's read is waiting
				began := time.Now()
				f.stop()
				if took := time.Since(began); took > 10*time.Second {
					t.Errorf("exit took %s after SIGTERM; --revoke-timeout is 10s\n%s", took, f.logs)
				}
				if alive := aliveTokens(v); tc.clean && len(alive) > 0 {
					t.Errorf("tokens alive after the pod ended: %v\n%s", alive, f.logs)
				}
			})
		})
	}
}

// aliveTokens lists the accessors of the tokens v still honours.
func aliveTokens(v *fakeVault) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var alive []string
	for _, tk := range v.tokens {
		if !tk.revoked && time.Now().Before(tk.expiry) {
			alive = append(alive, tk.accessor)
		}
	}
	return alive
}

// TestShortRevokeTimeoutRevokesALoginUnderWay: with --revoke-timeout 1s,
// SIGTERM while a re-login's answer is on its way. The login may wait a
// third of the timeout for its answer: one that comes in time is revoked
// (with every other token), one that comes later is given up, and either
// way the sidecar exits within the timeout.
func TestShortRevokeTimeoutRevokesALoginUnderWay(t *testing.T) {
	for _, tc := range []struct {
		latency time.Duration // of the login's answer
		clean   bool          // every token revoked
	}{{200 * time.Millisecond, true}, {1500 * time.Millisecond, false}} {
		t.Run(tc.latency.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = time.Hour, 90*time.Minute })
				f.start("--revoke-on-exit", "--revoke-timeout", "1s")
				time.Sleep(69 * time.Minute)
				v.mu.Lock()
				v.latency = tc.latency
				v.mu.Unlock()
				for logins, _, _, _ := v.counts(); logins < 2; logins, _, _, _ = v.counts() {
					time.Sleep(10 * time.Millisecond)
				}
				v.mu.Lock()
				v.latency = 0 // only the login's answer is slow
				v.mu.Unlock()
				began := time.Now()
				f.stop()
				took := time.Since(began)
				if alive := aliveTokens(v); tc.clean && len(alive) > 0 {
					t.Errorf("tokens alive after the pod ended: %v (exit took %s)\n%s", alive, took, f.logs)
				}
				if took > time.Second {
					t.Errorf("exit took %s after SIGTERM; --revoke-timeout is 1s", took)
				}
			})
		})
	}
}

// TestNoLoginAfterSIGTERM: SIGTERM after the loop's timer chose a
// re-login but before the step ran (here the loop waits on the state
// lock to save; in production select may also pick the timer over SIGTERM
// when both are ready): no login is sent, so no token is created to be
// revoked again.
func TestNoLoginAfterSIGTERM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, f := newDBFixture(t, func(v *fakeVault) { v.tokenTTL, v.tokenMax = time.Hour, 90*time.Minute })
		var stopped, late atomic.Bool
		f.startWith(deps{newClient: func(addr, ns string, timeout time.Duration, log *slog.Logger) (*api.Client, error) {
			c, err := v.newClient(addr, ns, timeout, log)
			if err != nil {
				return nil, err
			}
			cfg := c.CloneConfig()
			cfg.HttpClient.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if strings.HasSuffix(r.URL.Path, "/login") && stopped.Load() {
					late.Store(true)
				}
				return v.RoundTrip(r)
			})
			nc, err := api.NewClient(cfg)
			if err != nil {
				return nil, err
			}
			nc.ClearToken()
			return nc, nil
		}})
		// The re-login comes due just before 70 min.
		time.Sleep(70*time.Minute - 300*time.Millisecond)
		if logins, _, _, _ := v.counts(); logins != 1 {
			t.Fatalf("%d logins before the re-login was due", logins)
		}
		if err := os.Remove(filepath.Join(f.stateDir, state.FileName)); err != nil {
			t.Fatal(err)
		}
		unlock, err := state.Lock(context.Background(), f.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // due now: the loop waits on the lock to save
		f.cancel()
		stopped.Store(true)
		unlock()
		f.wait()
		if late.Load() {
			t.Errorf("a login was sent after SIGTERM\n%s", f.logs)
		}
	})
}
