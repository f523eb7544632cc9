package kube

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// Scenario 2: rotation inside a pod across the lease's max TTL (10 s
// leases renewable to 40 s) and across the token's max TTL (60 s): the app,
// opening a connection per query with the current file, never fails.
// Vault is reconfigured with setup.sh, as an operator would, and restored.
func TestScenario2Rotation(t *testing.T) {
	if _, err := runSetup(context.Background(), "secrets", merge(secretsEnv, map[string]string{"DB_DEFAULT_TTL": "10s", "DB_MAX_TTL": "40s"})); err != nil {
		t.Fatal(err)
	}
	if _, err := runSetup(context.Background(), "cluster", merge(clusterEnv, map[string]string{"TOKEN_TTL": "30s", "TOKEN_MAX_TTL": "60s"})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := runSetup(context.Background(), "all", merge(clusterEnv, secretsEnv)); err != nil {
			t.Error(err)
		}
	})
	_, p, _ := deployApp(t, overlay{listen: freePort(t), appEnv: map[string]string{"INTERVAL": "250ms"}})
	w := watchLogs(t, p)
	const run = 75 * time.Second
	time.Sleep(run)

	leaseRotations := w.count("vault-renew", "max TTL is near; replacing the credential")
	relogins := w.count("vault-renew", "logged in again")
	replaced := w.count("vault-renew", "replaced the credential")
	users := w.appUsers()
	if n := w.count("app", "query failed"); n > 0 {
		t.Errorf("%d app queries failed", n)
	}
	if leaseRotations < 1 {
		t.Errorf("no rotation at the lease's max TTL in %s", run)
	}
	if relogins < 1 {
		t.Errorf("no login again before the token's max TTL in %s", run)
	}
	if len(users) < 3 {
		t.Errorf("the app used %d database users in %s, want at least 3 (rotations)", len(users), run)
	}
	// Replaced users are revoked after vault-renew's --grace (30 s): the
	// first one is gone by now.
	if len(users) > 1 && roleExists(t, users[0]) {
		t.Errorf("the first database user %s still exists after it was replaced", users[0])
	}
	t.Logf("scenario 2: %s in one pod with 10 s leases (max 40 s) and a 30 s token (max 60 s): %d rotations at the lease's max TTL, %d logins again before the token's max TTL, %d credential replacements, %d database users, %d app queries, 0 failed",
		run, leaseRotations, relogins, replaced, len(users), w.count("app", "query ok"))
}

// Scenario 7: kubectl rollout restart of 3 replicas: 3 new users, the 3 old
// ones gone, 0 failed queries in any pod.
func TestScenario7RolloutRestart(t *testing.T) {
	o := overlay{appEnv: map[string]string{"DRAIN": "2s", "INTERVAL": "200ms"},
		// Three pods on one host network: vault-renew's listener (and its
		// readiness probe) off, so they need no port each.
		extra: []string{op("replace", "/spec/replicas", "3")}}
	o.base, o.kind, o.name = "manifests", "Deployment", "app"
	dir := o.write(t)
	kubectl(t, "apply", "-k", dir)
	t.Cleanup(func() { deleteAndWait(t, dir, appSel) })
	old := readyPods(t, appSel, 3, 2*time.Minute)
	watches := map[string]*logWatch{}
	for _, p := range old {
		watches[p.Metadata.UID] = watchLogs(t, p)
	}
	waitFor(t, "each old pod queried", 30*time.Second, func() bool {
		for _, w := range watches {
			if len(w.appUsers()) == 0 {
				return false
			}
		}
		return true
	})
	var oldUsers []string
	for _, w := range watches {
		oldUsers = append(oldUsers, w.appUsers()...)
	}

	t0 := time.Now()
	kubectl(t, "-n", workNS, "rollout", "restart", "deployment/app")
	kubectl(t, "-n", workNS, "rollout", "status", "deployment/app", "--timeout=3m")
	var fresh []testbed.Pod
	waitFor(t, "3 new pods Ready and the old ones gone", 2*time.Minute, func() bool {
		ps := pods(t, appSel)
		fresh = fresh[:0]
		for _, p := range ps {
			if watches[p.Metadata.UID] != nil {
				return false
			}
			if p.Ready() {
				fresh = append(fresh, p)
			}
		}
		return len(fresh) == 3
	})
	rolled := time.Since(t0)
	for _, p := range fresh {
		watches[p.Metadata.UID] = watchLogs(t, p)
	}
	var newUsers []string
	waitFor(t, "each new pod queried", 30*time.Second, func() bool {
		newUsers = newUsers[:0]
		for _, p := range fresh {
			newUsers = append(newUsers, watches[p.Metadata.UID].appUsers()...)
		}
		return len(newUsers) == 3
	})
	var oldGone time.Duration
	waitFor(t, "the old users dropped", 30*time.Second, func() bool {
		for _, u := range oldUsers {
			if roleExists(t, u) {
				return false
			}
		}
		oldGone = time.Since(t0)
		return true
	})
	queries, failed := 0, 0
	for _, w := range watches {
		queries += w.count("app", "query ok")
		failed += w.count("app", "query failed")
	}
	if failed > 0 {
		t.Errorf("%d of %d app queries failed", failed, queries+failed)
	}
	slices.Sort(newUsers)
	if len(slices.Compact(slices.Clone(newUsers))) != 3 {
		t.Errorf("new pods' users %v: want 3 distinct", newUsers)
	}
	for _, u := range newUsers {
		if slices.Contains(oldUsers, u) {
			t.Errorf("a new pod uses an old pod's user %s", u)
		}
	}
	t.Logf("scenario 7: rollout restart of 3 replicas done %s after the command (3 new pods Ready, old ones gone); 3 new database users, the 3 old ones gone by +%s; %d app queries across 6 pods, 0 failed",
		secs(rolled), secs(oldGone), queries)
}

// Scenario 8: the app ignores SIGTERM until terminationGracePeriodSeconds
// (10 s here) runs out. The kubelet then kills it and gives the native
// sidecar only its minimum grace; --revoke-on-exit must fit in it.
func TestScenario8GraceExhausted(t *testing.T) {
	o := overlay{listen: freePort(t), appEnv: map[string]string{"IGNORE_TERM": "true", "INTERVAL": "100ms"},
		extra: []string{op("replace", "/spec/template/spec/terminationGracePeriodSeconds", "10")}}
	_, p, _, w := deployServing(t, o, 3)
	st := readPodState(t, p)
	user := w.appUsers()[0]

	t0, gone := deletePod(t, p, user)
	w.close()

	appLines := w.lines("app")
	last := appLines[len(appLines)-1]
	rev, ok1 := w.first("vault-renew", "revoked lease")
	done, ok2 := w.first("vault-renew", "revoked every credential on exit")
	if !ok1 || !ok2 {
		t.Fatalf("vault-renew did not finish revoking (first revocation %v, done %v): the grace left was too short", ok1, ok2)
	}
	if tokenAlive(t, st.Token.Accessor) || leaseAlive(t, st.Secrets[0].LeaseID) {
		t.Errorf("the token or the lease survived")
	}
	kills := kubeletKills(t, p.Metadata.Name)
	app, renew := kills["app"], kills["vault-renew"]
	if renew.at.IsZero() || app.at.IsZero() {
		t.Fatalf("the kubelet's log has no kill of app or vault-renew for pod %s", p.Metadata.Name)
	}
	// The app's SIGKILL and the sidecar's SIGTERM go out together: a query
	// already under way may meet the revoked credential. None may before.
	early, late := 0, 0
	for _, l := range appLines {
		if strings.Contains(l.Text, "query failed") {
			if l.Time.Before(renew.at) {
				early++
			} else {
				late++
			}
		}
	}
	if early > 0 {
		t.Errorf("%d app queries failed before the grace period ended", early)
	}
	elapsed := "?"
	if l, ok := w.first("vault-renew", "vault-revoke done"); ok {
		if m := regexp.MustCompile(`elapsed=(\S+)`).FindStringSubmatch(l.Text); m != nil {
			elapsed = m[1]
		}
	}
	t.Logf("scenario 8: delete at +0.00 s; the kubelet stopped app (gracePeriod=%s) at +%.2f s; the app ignored SIGTERM, 0 failed queries until the grace's end, %d in the moment it was killed, its last log line +%.2f s; at the grace's end the kubelet sent vault-renew SIGTERM with gracePeriod=%s at +%.2f s; vault-revoke took %s, its last line +%.2f s; database user gone +%.2f s; token and lease revoked",
		app.grace, app.at.Sub(t0).Seconds(), late, last.Time.Sub(t0).Seconds(), renew.grace, renew.at.Sub(t0).Seconds(),
		elapsed, done.Time.Sub(t0).Seconds(), gone.Sub(t0).Seconds())
	_ = rev
}

// kubeletKill is the kubelet's own record of stopping a container: it logs
// "Killing container with a grace period" right before it asks the runtime
// to stop it (SIGTERM), after any wait for the container's turn.
type kubeletKill struct {
	at    time.Time
	grace string // seconds left for the container, as the kubelet logged it
}

// kubeletKills returns the last such record for each container of pod.
func kubeletKills(t *testing.T, pod string) map[string]kubeletKill {
	t.Helper()
	f, err := os.Open(node.KubeletLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^I(\d{4} \d\d:\d\d:\d\d\.\d{6}) .*"Killing container with a grace period" pod="[^/]+/` + regexp.QuoteMeta(pod) + `" .*containerName="([^"]+)" .*gracePeriod=(\d+)`)
	kills := map[string]kubeletKill{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := re.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		// klog's time has no year; the kubelet runs with TZ=UTC.
		at, err := time.Parse("2006 0102 15:04:05.000000", fmt.Sprintf("%d %s", time.Now().UTC().Year(), m[1]))
		if err != nil {
			t.Fatal(err)
		}
		kills[m[2]] = kubeletKill{at: at, grace: m[3] + " s"}
	}
	return kills
}
