package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

const appSel = "app.kubernetes.io/name=app"

// deployApp applies the Deployment overlay o and returns its Ready pod and
// the time from apply to Ready. The Deployment is deleted at the end.
func deployApp(t *testing.T, o overlay) (string, testbed.Pod, time.Duration) {
	t.Helper()
	if o.base == "" {
		o.base, o.kind, o.name = "manifests", "Deployment", "app"
	}
	dir := o.write(t)
	start := time.Now()
	kubectl(t, "apply", "-k", dir)
	t.Cleanup(func() { deleteAndWait(t, dir, appSel) })
	p := readyPods(t, appSel, 1, 2*time.Minute)[0]
	return dir, p, time.Since(start)
}

// deployServing deploys the app (deployApp), watches its pod's logs and
// waits until the app has made n successful queries.
func deployServing(t *testing.T, o overlay, n int) (dir string, p testbed.Pod, readyIn time.Duration, w *logWatch) {
	t.Helper()
	dir, p, readyIn = deployApp(t, o)
	w = watchLogs(t, p)
	waitFor(t, fmt.Sprintf("%d successful app queries", n), 30*time.Second, func() bool { return w.count("app", "query ok") >= n })
	return dir, p, readyIn, w
}

// Scenario 1: the Deployment as shipped (through the test overlay) becomes
// Ready; the app, running as another uid, reads the secret file and
// queries PostgreSQL with it.
func TestScenario1Deployment(t *testing.T) {
	o := overlay{listen: freePort(t)}
	dir, p, readyIn, w := deployServing(t, o, 5)
	printDiff(t, "manifests", dir)

	start, ok := w.first("app", "start uid=")
	if !ok || !strings.Contains(start.Text, fmt.Sprintf("uid=%d ", 1000)) || !strings.Contains(start.Text, "65532") {
		t.Errorf("app should run as uid 1000 with the pod's fsGroup 65532 as a supplementary group; it logged %q", start.Text)
	}
	if n := w.count("app", "query failed"); n > 0 {
		t.Errorf("%d app queries failed", n)
	}
	users := w.appUsers()
	if len(users) != 1 || !roleExists(t, users[0]) {
		t.Fatalf("app should query as one Vault-made user that exists; saw %v", users)
	}
	secretFile := node.PodVolumePath(p.Metadata.UID, "vault-secrets", "db")
	fi, err := os.Stat(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o440 {
		t.Errorf("/vault/secrets/db mode %v, want 0440", fi.Mode().Perm())
	}
	// The credential must appear in no container's log.
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	password := regexp.MustCompile(`PASSWORD="([^"]+)"`).FindSubmatch(secret)
	if password == nil {
		t.Fatalf("no PASSWORD line in /vault/secrets/db")
	}
	for _, c := range []string{"vault-init", "vault-renew", "app"} {
		for _, l := range w.lines(c) {
			if strings.Contains(l.Text, string(password[1])) {
				t.Errorf("container %s logged the database password", c)
			}
		}
	}
	t.Logf("scenario 1: Deployment Ready %s after kubectl apply -k (vault-init logged in through a real TokenReview at auth/%s); app %s read /vault/secrets/db (mode %04o) and ran %d queries as %s, 0 failed",
		secs(readyIn), authMount, strings.TrimPrefix(start.Text, "start "), fi.Mode().Perm(), w.count("app", "query ok"), users[0])
}

// Scenario 3: kubectl delete pod. The app drains for 5 s after its SIGTERM
// with every query succeeding; vault-renew gets its SIGTERM only after the
// app exited and revokes; the database user is gone within 2 s of the app's
// exit; the token is revoked.
func TestScenario3DeletePod(t *testing.T) {
	_, p, _, w := deployServing(t, overlay{listen: freePort(t), appEnv: map[string]string{"DRAIN": "5s", "INTERVAL": "100ms"}}, 3)
	st := readPodState(t, p)
	user := w.appUsers()[0]

	t0, gone := deletePod(t, p, user)
	w.close()

	sig, ok1 := w.first("app", "sigterm")
	exit, ok2 := w.first("app", "exit ok=")
	rev, ok3 := w.first("vault-renew", "revoked lease")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("missing log lines: app sigterm %v, app exit %v, vault-renew revocation %v", ok1, ok2, ok3)
	}
	drained := 0
	for _, l := range w.lines("app") {
		if strings.Contains(l.Text, "query ok") && l.Time.After(sig.Time) {
			drained++
		}
	}
	if n := w.count("app", "query failed"); n > 0 {
		t.Errorf("%d app queries failed (%s)", n, exit.Text)
	}
	if d := exit.Time.Sub(sig.Time); d < 4900*time.Millisecond {
		t.Errorf("app drained for %s, want 5 s", d)
	}
	if !rev.Time.After(exit.Time) {
		t.Errorf("vault-renew revoked at %s, before the app exited at %s", rev.Time.Format(time.StampMicro), exit.Time.Format(time.StampMicro))
	}
	if d := gone.Sub(exit.Time); d > 2*time.Second {
		t.Errorf("database user gone %s after the app exited, want within 2 s", d)
	}
	if tokenAlive(t, st.Token.Accessor) {
		t.Errorf("the pod's Vault token is still valid")
	}
	if leaseAlive(t, st.Secrets[0].LeaseID) {
		t.Errorf("the pod's lease is still valid")
	}
	kills := kubeletKills(t, p.Metadata.Name)
	app, renew := kills["app"], kills["vault-renew"]
	if app.at.IsZero() || renew.at.IsZero() {
		t.Fatalf("the kubelet's log has no kill of app or vault-renew for pod %s", p.Metadata.Name)
	}
	if renew.at.Before(exit.Time) {
		t.Errorf("the kubelet stopped vault-renew at %s, before the app exited at %s", renew.at.Format(time.StampMicro), exit.Time.Format(time.StampMicro))
	}
	t.Logf("scenario 3: kubectl delete pod at +0.00 s; the kubelet stops app (SIGTERM, gracePeriod=%s) +%.2f s; app logs SIGTERM +%.2f s; app exits +%.2f s after %d queries in its 5 s drain, 0 failed; the kubelet stops vault-renew (SIGTERM, gracePeriod=%s) +%.2f s; its first revocation +%.2f s (%.2f s after the app's exit); database user gone +%.2f s (%.2f s after the app's exit, polled every 100 ms); token and lease revoked",
		app.grace, app.at.Sub(t0).Seconds(), sig.Time.Sub(t0).Seconds(), exit.Time.Sub(t0).Seconds(), drained,
		renew.grace, renew.at.Sub(t0).Seconds(), rev.Time.Sub(t0).Seconds(), rev.Time.Sub(exit.Time).Seconds(),
		gone.Sub(t0).Seconds(), gone.Sub(exit.Time).Seconds())
}

// Scenario 4: the Job example completes (its pod Succeeded, not held up by
// the sidecar) and its database user is gone.
func TestScenario4Job(t *testing.T) {
	const sel = "app.kubernetes.io/name=report"
	o := overlay{base: "manifests/examples/job", kind: "Job", name: "report", listen: freePort(t),
		appEnv: map[string]string{"QUERIES": "10", "INTERVAL": "100ms"}}
	dir := o.write(t)
	printDiff(t, o.base, dir)
	t0 := time.Now()
	kubectl(t, "apply", "-k", dir)
	t.Cleanup(func() { deleteAndWait(t, dir, sel) })
	var p testbed.Pod
	waitFor(t, "the Job's pod", 60*time.Second, func() bool {
		ps := pods(t, sel)
		if len(ps) == 1 && ps[0].Metadata.UID != "" {
			p = ps[0]
			return true
		}
		return false
	})
	w := watchLogs(t, p)
	w.app = "report"
	var user string
	var gone, podDone, succeeded time.Time
	waitFor(t, "the Job complete, its pod Succeeded and its user gone", 2*time.Minute, func() bool {
		if user == "" {
			if u := w.appUsers(); len(u) > 0 {
				user = u[0]
			}
		}
		if podDone.IsZero() {
			if ps := pods(t, sel); len(ps) == 1 && ps[0].Status.Phase == "Succeeded" {
				podDone = time.Now()
			}
		}
		if succeeded.IsZero() && kubectl(t, "-n", workNS, "get", "job", "report", "-o", "jsonpath={.status.succeeded}") == "1" {
			succeeded = time.Now()
		}
		if user != "" && gone.IsZero() && w.count(w.app, "exit ok=") > 0 && !roleExists(t, user) {
			gone = time.Now()
		}
		return !succeeded.IsZero() && !podDone.IsZero() && !gone.IsZero()
	})
	exit, _ := w.first(w.app, "exit ok=")
	if !strings.Contains(exit.Text, "ok=10 failed=0") {
		t.Errorf("app: %q, want 10 queries, 0 failed", exit.Text)
	}
	rev, _ := w.first("vault-renew", "revoked every credential on exit")
	t.Logf("scenario 4: Job complete %.2f s after kubectl apply -k; app ran 10 queries as %s, 0 failed, and exited; vault-renew had revoked everything %.2f s after that, the user was gone at +%.2f s, the pod Succeeded at +%.2f s, the Job complete at +%.2f s (polled every 100 ms)",
		succeeded.Sub(t0).Seconds(), user, rev.Time.Sub(exit.Time).Seconds(), gone.Sub(exit.Time).Seconds(), podDone.Sub(exit.Time).Seconds(), succeeded.Sub(exit.Time).Seconds())
}

// Scenario 5: vault-renew's process is SIGKILLed through containerd, not
// stopped by the kubelet: the kubelet restarts it; it resumes from
// /vault/state with the same lease and token; nothing is revoked or issued.
func TestScenario5SidecarKilled(t *testing.T) {
	_, p, _, w := deployServing(t, overlay{listen: freePort(t)}, 3)
	st := readPodState(t, p)
	users := dynamicRoles(t)
	cs, _ := p.Container("vault-renew")
	id := strings.TrimPrefix(cs.ContainerID, "containerd://")
	if id == "" || cs.RestartCount != 0 {
		t.Fatalf("vault-renew status: %+v", cs)
	}

	t0 := time.Now()
	if out, err := node.Ctr(context.Background(), "tasks", "kill", "--signal", "SIGKILL", id); err != nil {
		t.Fatalf("ctr tasks kill: %v\n%s", err, out)
	}
	var restarted time.Duration
	waitFor(t, "vault-renew restarted and ready", time.Minute, func() bool {
		for _, q := range pods(t, appSel) {
			if q.Metadata.UID != p.Metadata.UID {
				continue
			}
			c, _ := q.Container("vault-renew")
			if c.RestartCount >= 1 && c.State.Running != nil && c.Ready && q.Ready() {
				restarted = time.Since(t0)
				return true
			}
		}
		return false
	})
	queriesBefore := w.count("app", "query ok")
	waitFor(t, "5 more app queries", 30*time.Second, func() bool { return w.count("app", "query ok") >= queriesBefore+5 })

	st2 := readPodState(t, p)
	if st2.Secrets[0].LeaseID != st.Secrets[0].LeaseID || st2.Token.Accessor != st.Token.Accessor {
		t.Errorf("after the restart: lease %s token %s, want the same as before (%s, %s)",
			st2.Secrets[0].LeaseID, st2.Token.Accessor, st.Secrets[0].LeaseID, st.Token.Accessor)
	}
	if !leaseAlive(t, st.Secrets[0].LeaseID) || !tokenAlive(t, st.Token.Accessor) {
		t.Errorf("the lease or the token was revoked")
	}
	if n := dynamicRoles(t); n != users {
		t.Errorf("database users: %d before the kill, %d after: want no new user", users, n)
	}
	if n := w.count("app", "query failed"); n > 0 {
		t.Errorf("%d app queries failed", n)
	}
	if n := len(w.appUsers()); n != 1 {
		t.Errorf("app used %d database users, want 1", n)
	}
	t.Logf("scenario 5: SIGKILL of vault-renew through containerd: restarted by the kubelet and Ready again %s later (restartCount 1); same lease and token, %d database user(s) before and after, %d app queries, 0 failed",
		secs(restarted), users, w.count("app", "query ok"))
}

// Scenario 6: the restricted Pod Security profile admits the manifests as
// shipped. The live pods use the host network, which restricted forbids, so
// the unchanged manifests are checked by server-side dry-run in a namespace
// that enforces restricted: their pods (from the workloads' templates) are
// admitted and the workloads draw no warning; the hostNetwork test pod is
// refused there, which shows the check is live.
func TestScenario6Restricted(t *testing.T) {
	const ns = "podlease-restricted"
	kubectl(t, "apply", "-f", writeTemp(t, namespaceYAML(ns, "restricted", "restricted")))
	t.Cleanup(func() { kubectl(t, "delete", "namespace", ns, "--wait=false") })
	kubectl(t, "-n", ns, "apply", "-f", writeTemp(t, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app}\n"))

	var admitted []string
	for _, base := range []string{"manifests", "manifests/examples/job", "manifests/examples/annotations", "manifests/examples/from-agent-injector"} {
		out, err := node.Kubectl(context.Background(), "-n", ns, "apply", "-k", repoRoot+"/"+base, "--dry-run=server")
		if err != nil || strings.Contains(string(out), "Warning") {
			t.Errorf("%s as shipped, server-side dry-run under restricted: %v\n%s", base, err, out)
		}
		for _, pod := range templatePods(t, kubectl(t, "kustomize", repoRoot+"/"+base), ns) {
			out, err := node.KubectlIn(context.Background(), pod, "create", "--dry-run=server", "-f", "-")
			if err != nil {
				t.Errorf("%s: a pod of the shipped template is refused under restricted: %v\n%s", base, err, out)
				continue
			}
			admitted = append(admitted, strings.TrimSpace(string(out)))
		}
	}
	dir := overlay{base: "manifests", kind: "Deployment", name: "app", listen: 1}.write(t)
	rendered := strings.ReplaceAll(kubectl(t, "kustomize", dir), "namespace: "+workNS, "namespace: "+ns)
	var refusal string
	for _, pod := range templatePods(t, rendered, ns) {
		out, err := node.KubectlIn(context.Background(), pod, "create", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(string(out), "violates PodSecurity") {
			t.Errorf("the hostNetwork test pod should be refused under restricted: %v\n%s", err, out)
		}
		refusal = strings.TrimSpace(string(out))
	}
	t.Logf("scenario 6: restricted enforced in namespace %s: admitted by server-side dry-run: %s; no warning for the Deployment, the Job and the two component-built examples; the hostNetwork test pod refused: %s",
		ns, strings.Join(admitted, "; "), refusal)
}

// templatePods turns every workload of the rendered YAML into a Pod of its
// pod template (JSON), in namespace ns.
func templatePods(t *testing.T, rendered, ns string) [][]byte {
	t.Helper()
	out, err := node.KubectlIn(context.Background(), []byte(rendered), "create", "--dry-run=client", "-o", "json", "-f", "-")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	type object struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Template json.RawMessage `json:"template"`
		} `json:"spec"`
	}
	// One JSON object per input object, one after the other.
	var objects []object
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var o object
		if err := dec.Decode(&o); err != nil {
			t.Fatal(err)
		}
		objects = append(objects, o)
	}
	var podsJSON [][]byte
	for _, it := range objects {
		if len(it.Spec.Template) == 0 {
			continue
		}
		var tmpl struct {
			Metadata map[string]any `json:"metadata"`
			Spec     map[string]any `json:"spec"`
		}
		if err := json.Unmarshal(it.Spec.Template, &tmpl); err != nil {
			t.Fatal(err)
		}
		meta := tmpl.Metadata
		if meta == nil {
			meta = map[string]any{}
		}
		meta["name"] = strings.ToLower(it.Kind) + "-" + it.Metadata.Name
		meta["namespace"] = ns
		b, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tmpl.Spec})
		podsJSON = append(podsJSON, b)
	}
	if len(podsJSON) == 0 {
		t.Fatalf("no workload with a pod template in the rendered manifests")
	}
	return podsJSON
}

// TestSetupSecondCluster configures a second cluster's auth mount on the
// Vault already set up for the node, with `setup.sh cluster`: the new mount
// logs a real pod identity in, and nothing of the first cluster or of the
// secrets side changes.
func TestSetupSecondCluster(t *testing.T) {
	const second = "kubernetes-second"
	c := bed.Root().Logical()
	snapshot := func() string {
		var b strings.Builder
		for _, p := range []string{"sys/policy/app", "database/config/pg", "database/roles/app", "auth/" + authMount + "/config", "auth/" + authMount + "/role/app"} {
			s, err := c.Read(p)
			if err != nil || s == nil {
				t.Fatalf("read %s: %v", p, err)
			}
			j, _ := json.Marshal(s.Data)
			fmt.Fprintf(&b, "%s %s\n", p, j)
		}
		return b.String()
	}
	before := snapshot()
	out, err := runSetup(context.Background(), "cluster", merge(clusterEnv, map[string]string{"AUTH_MOUNT": second}))
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(); after != before {
		t.Errorf("setup.sh cluster changed the secrets side or the first cluster:\nbefore %s\nafter  %s", before, after)
	}
	if strings.Contains(out, "setup: database/") || strings.Contains(out, "setup: policy app") {
		t.Errorf("setup.sh cluster should only touch auth/%s:\n%s", second, out)
	}

	kubectl(t, "-n", workNS, "apply", "-f", writeTemp(t, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app}\n"))
	jwt := strings.TrimSpace(kubectl(t, "-n", workNS, "create", "token", "app", "--audience", "vault", "--duration", "10m"))
	secret, err := c.Write("auth/"+second+"/login", map[string]any{"role": "app", "jwt": jwt})
	if err != nil {
		t.Fatalf("login at auth/%s with a real service-account token: %v", second, err)
	}
	if err := bed.Root().Auth().Token().RevokeAccessor(secret.Auth.Accessor); err != nil {
		t.Fatal(err)
	}
	other := strings.TrimSpace(kubectl(t, "-n", workNS, "create", "token", "app", "--audience", "not-vault", "--duration", "10m"))
	if _, err := c.Write("auth/"+second+"/login", map[string]any{"role": "app", "jwt": other}); err == nil {
		t.Errorf("auth/%s accepted a token for another audience", second)
	}
	bad, err := runSetup(context.Background(), "everything", nil)
	if err == nil || !strings.Contains(bad, "usage: setup.sh") {
		t.Errorf("setup.sh with an unknown part: %v\n%s", err, bad)
	}
	t.Logf("second cluster: setup.sh cluster at auth/%s left the policy, the database side and auth/%s unchanged; a real pod token logged in with policies %v; a token for another audience was refused",
		second, authMount, secret.Auth.Policies)
}

// writeTemp writes text to a new file in workDir and returns its path.
func writeTemp(t *testing.T, text string) string {
	t.Helper()
	f, err := os.CreateTemp(workDir, "obj-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}
