package e2e

// Load: many pods starting at once against the one Vault.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/state"
)

// TestLoadInit starts 200 simulated pods at once, as a rollout of a large
// Deployment would: every vault-init must succeed (retrying what Vault
// cannot take at once), each pod with its own token and database user.
// It runs alone (not in parallel), so the other tests' timings are not
// disturbed and its own figure is the machine's.
func TestLoadInit(t *testing.T) {
	const pods = 200
	const role = "load"
	if err := bed.CreateDBRole(role, time.Hour, time.Hour); err != nil {
		t.Fatal(err)
	}
	prefix := "database/creds/" + role + "/"
	t.Cleanup(func() { revokePrefix(t, prefix) })

	ps := make([]*pod, pods)
	for i := range ps {
		ps[i] = newPod(t)
	}
	results := make([]result, pods)
	began := time.Now()
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			results[i] = runWith(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+role, "--secret", "kv=secret/data/app", "--timeout", "60s"),
				runOpts{env: p.env, timeout: 90 * time.Second})
		})
	}
	wg.Wait()
	wall := time.Since(began)

	var failures, retried int
	var times []time.Duration
	accessors := map[string]bool{}
	users := map[string]bool{}
	for i, r := range results {
		times = append(times, r.elapsed)
		if r.code != 0 {
			failures++
			t.Errorf("pod %d: exit %d:\n%s", i, r.code, r.stderr)
			continue
		}
		noteSecret(ps[i].token())
		if strings.Contains(r.stderr, "retrying") {
			retried++
		}
		st, err := state.Load(ps[i].stateDir)
		if err != nil {
			t.Errorf("pod %d: %v", i, err)
			continue
		}
		accessors[st.Token.Accessor] = true
		user, _ := dbCreds(t, filepath.Join(ps[i].secretsDir, "db"))
		users[user] = true
	}
	if len(accessors) != pods-failures || len(users) != pods-failures {
		t.Errorf("%d tokens and %d database users for %d pods: every pod must have its own", len(accessors), len(users), pods-failures)
	}
	// A sample of the credentials must log in.
	for range 10 {
		p := ps[rand.IntN(pods)]
		user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
		if err := pgLogin(user, pass); err != nil {
			t.Errorf("a load-test credential does not log in: %v", err)
		}
	}
	if n := len(leasesUnder(t, prefix)); n != pods-failures {
		t.Errorf("%d leases under %s for %d pods", n, prefix, pods-failures)
	}
	slices.Sort(times)
	figure(t, "load", "%d pods starting at once (vault-init each: kubernetes login, a database credential, a KV secret): %d failures, wall time %s, per pod p50 %s p95 %s max %s, %d pods needed retries",
		pods, failures, wall.Round(10*time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)*95/100].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), retried)

	// Clean up as the pods' ends would: revoke every token, and with it
	// its lease.
	ctx := context.Background()
	root := bed.Root()
	var mu sync.Mutex
	var revokeErrs []string
	sem := make(chan struct{}, 16)
	for acc := range accessors {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := root.Logical().WriteWithContext(ctx, "auth/token/revoke-accessor", map[string]any{"accessor": acc}); err != nil {
				mu.Lock()
				revokeErrs = append(revokeErrs, fmt.Sprintf("%s: %v", acc, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(revokeErrs) > 0 {
		t.Errorf("revoke load-test tokens: %v", revokeErrs)
	}
	if left := leasesLeft(t, prefix, 20*time.Second); len(left) > 0 {
		t.Errorf("%d load-test leases left after their tokens were revoked", len(left))
	}
}
