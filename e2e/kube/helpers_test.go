package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// overlay is the test overlay over one of the shipped kustomizations: only
// what must differ on this node (images, addresses, the auth mount, the
// host network) plus what a scenario asks for.
type overlay struct {
	base   string            // "manifests" or one of manifests/examples
	kind   string            // Deployment or Job
	name   string            // the workload's name
	listen int               // vault-renew's /readyz port; 0 turns the listener and its probe off
	appEnv map[string]string // the test app's settings, beyond PostgreSQL's address
	extra  []string          // more JSON patch operations, one per line
	// component: the base is built with manifests/components/podlease,
	// whose ConfigMap podlease holds VAULT_ADDR for every workload.
	component bool
}

// write renders the overlay into a new directory and returns it.
func (o overlay) write(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(workDir, "overlay-")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, filepath.Join(repoRoot, o.base))
	if err != nil {
		t.Fatal(err)
	}
	const spec = "/spec/template/spec"
	ops := []string{
		// The network choice of the node (see testbed.StartNode).
		op("add", spec+"/hostNetwork", "true"),
		// No registry: the images were imported into containerd.
		op("add", spec+"/initContainers/0/imagePullPolicy", `"Never"`),
		op("add", spec+"/initContainers/1/imagePullPolicy", `"Never"`),
		op("add", spec+"/containers/0/imagePullPolicy", `"Never"`),
		// The cluster's auth mount.
		op("add", spec+"/initContainers/0/args/-", strconv.Quote("--auth-mount="+authMount)),
	}
	// Where Vault is.
	patches := ""
	if o.component {
		patches = fmt.Sprintf(`
  - target: {kind: ConfigMap, name: podlease}
    patch: |-
      %s`, op("replace", "/data/VAULT_ADDR", strconv.Quote(bed.VaultAddr)))
	} else {
		ops = append(ops, op("replace", spec+"/initContainers/0/env/0/value", strconv.Quote(bed.VaultAddr)))
	}
	if o.listen > 0 {
		// On the host network every pod shares the ports: a free one, on
		// loopback only, and the probe pointed there.
		port := strconv.Itoa(o.listen)
		ops = append(ops,
			op("add", spec+"/initContainers/1/env/-", fmt.Sprintf(`{"name": "PODLEASE_LISTEN", "value": "127.0.0.1:%s"}`, port)),
			op("replace", spec+"/initContainers/1/ports/0/containerPort", port),
			op("replace", spec+"/initContainers/1/readinessProbe/httpGet/port", port),
			op("add", spec+"/initContainers/1/readinessProbe/httpGet/host", `"127.0.0.1"`),
		)
	} else {
		ops = append(ops,
			// An empty PODLEASE_LISTEN counts as unset: the flag it is.
			op("add", spec+"/initContainers/1/args", `["--listen="]`),
			op("remove", spec+"/initContainers/1/ports", ""),
			op("remove", spec+"/initContainers/1/readinessProbe", ""),
		)
	}
	// The app: the test program, as a user other than podlease's.
	env := map[string]string{"PGHOST": "127.0.0.1", "PGPORT": strings.Split(bed.PGAddr, ":")[1], "PGDATABASE": testbed.PGDatabase}
	for k, v := range o.appEnv {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var envJSON []string
	for _, k := range keys {
		envJSON = append(envJSON, fmt.Sprintf(`{"name": %q, "value": %q}`, k, env[k]))
	}
	ops = append(ops,
		op("replace", spec+"/containers/0/image", strconv.Quote(testbed.AppImage)),
		op("replace", spec+"/containers/0/command", `["/usr/local/bin/podlease-app"]`),
		op("remove", spec+"/containers/0/args", ""),
		// add sets env whether the app container has one or not.
		op("add", spec+"/containers/0/env", "["+strings.Join(envJSON, ", ")+"]"),
		op("add", spec+"/containers/0/securityContext/runAsUser", strconv.Itoa(testbed.AppUID)),
		op("add", spec+"/containers/0/securityContext/runAsGroup", strconv.Itoa(testbed.AppUID)),
	)
	ops = append(ops, o.extra...)
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: %s
resources:
  - %s
images:
  - name: ghcr.io/podlease/podlease
    newName: %s
    newTag: %s
patches:
  - target: {kind: %s, name: %s}
    patch: |-
      %s%s
`, workNS, rel, strings.Split(testbed.PodleaseImage, ":")[0], strings.Split(testbed.PodleaseImage, ":")[1],
		o.kind, o.name, strings.Join(ops, "\n      "), patches)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// op is one JSON patch operation as a YAML flow mapping; value is JSON.
func op(kind, path, value string) string {
	if kind == "remove" {
		return fmt.Sprintf(`- {"op": "remove", "path": %q}`, path)
	}
	return fmt.Sprintf(`- {"op": %q, "path": %q, "value": %s}`, kind, path, value)
}

// kubectl runs kubectl as admin and fails the test on error.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := node.Kubectl(context.Background(), args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return string(out)
}

// printDiff prints what the overlay changes in the rendered manifests.
func printDiff(t *testing.T, base, overlayDir string) {
	t.Helper()
	a := filepath.Join(workDir, "base-rendered.yaml")
	b := filepath.Join(workDir, "overlay-rendered.yaml")
	if err := os.WriteFile(a, []byte(kubectl(t, "kustomize", filepath.Join(repoRoot, base))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte(kubectl(t, "kustomize", overlayDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("diff", "-U0", a, b).CombinedOutput()
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "+") || strings.HasPrefix(l, "-") {
			if !strings.HasPrefix(l, "+++") && !strings.HasPrefix(l, "---") {
				lines = append(lines, l)
			}
		}
	}
	t.Logf("test overlay over %s changes %d lines of the rendered manifests:\n%s", base, len(lines), strings.Join(lines, "\n"))
}

// pods lists the pods of workNS with label selector sel.
func pods(t *testing.T, sel string) []testbed.Pod {
	t.Helper()
	var list struct {
		Items []testbed.Pod `json:"items"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "-n", workNS, "get", "pods", "-l", sel, "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// waitFor polls cond every 100 ms until it holds or limit passes.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not after %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// readyPods waits until n pods matching sel (and not being deleted) are
// Ready and returns them.
func readyPods(t *testing.T, sel string, n int, limit time.Duration) []testbed.Pod {
	t.Helper()
	var ready []testbed.Pod
	waitFor(t, fmt.Sprintf("%d Ready pod(s) %s", n, sel), limit, func() bool {
		ready = ready[:0]
		for _, p := range pods(t, sel) {
			if p.Metadata.DeletionTimestamp == nil && p.Ready() {
				ready = append(ready, p)
			}
		}
		return len(ready) == n
	})
	return ready
}

// logLine is one line of a container's log, with the runtime's timestamp.
type logLine struct {
	Time time.Time
	Text string
}

// logWatch copies a pod's container logs from the kubelet's podLogsDir
// while the pod exists (the kubelet removes them with the pod).
type logWatch struct {
	app  string // the app container's name
	dir  string
	mu   sync.Mutex
	logs map[string][]byte // container/N.log -> content
	stop chan struct{}
	done chan struct{}
}

func watchLogs(t *testing.T, p testbed.Pod) *logWatch {
	w := &logWatch{
		app:  "app",
		dir:  filepath.Join(node.PodLogsDir, workNS+"_"+p.Metadata.Name+"_"+p.Metadata.UID),
		logs: map[string][]byte{},
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go func() {
		defer close(w.done)
		for {
			w.poll()
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *logWatch) poll() {
	files, _ := filepath.Glob(filepath.Join(w.dir, "*", "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		key, _ := filepath.Rel(w.dir, f)
		w.mu.Lock()
		if len(b) >= len(w.logs[key]) {
			w.logs[key] = b
		}
		w.mu.Unlock()
	}
}

func (w *logWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
		<-w.done
	}
}

// lines returns the log lines of container, across its restarts, in order.
func (w *logWatch) lines(container string) []logLine {
	w.poll()
	w.mu.Lock()
	defer w.mu.Unlock()
	var keys []string
	for k := range w.logs {
		if strings.HasPrefix(k, container+"/") {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(keys[i]), ".log"))
		b, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(keys[j]), ".log"))
		return a < b
	})
	var out []logLine
	for _, k := range keys {
		sc := bufio.NewScanner(strings.NewReader(string(w.logs[k])))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			// CRI log format: TIME STREAM TAG MESSAGE
			f := strings.SplitN(sc.Text(), " ", 4)
			if len(f) < 4 {
				continue
			}
			ts, err := time.Parse(time.RFC3339Nano, f[0])
			if err != nil {
				continue
			}
			out = append(out, logLine{Time: ts, Text: f[3]})
		}
	}
	return out
}

// first returns the first line of container containing s.
func (w *logWatch) first(container, s string) (logLine, bool) {
	for _, l := range w.lines(container) {
		if strings.Contains(l.Text, s) {
			return l, true
		}
	}
	return logLine{}, false
}

// count counts container's lines containing s.
func (w *logWatch) count(container, s string) int {
	n := 0
	for _, l := range w.lines(container) {
		if strings.Contains(l.Text, s) {
			n++
		}
	}
	return n
}

// appUsers returns the database users the app's successful queries ran as.
func (w *logWatch) appUsers() []string {
	var users []string
	for _, l := range w.lines(w.app) {
		if _, rest, ok := strings.Cut(l.Text, "query ok user="); ok {
			u, _, _ := strings.Cut(rest, " ")
			if !slices.Contains(users, u) {
				users = append(users, u)
			}
		}
	}
	return users
}

// podState is the pod's state.json as vault-init wrote it, read through
// the kubelet's mount namespace (the emptyDir is a tmpfs there).
type podState struct {
	Token struct {
		Accessor string `json:"accessor"`
	} `json:"token"`
	Secrets []struct {
		Name    string `json:"name"`
		LeaseID string `json:"lease_id"`
	} `json:"secrets"`
}

func readPodState(t *testing.T, p testbed.Pod) podState {
	t.Helper()
	b, err := os.ReadFile(node.PodVolumePath(p.Metadata.UID, "vault-state", "state.json"))
	if err != nil {
		t.Fatalf("read the pod's state.json: %v", err)
	}
	var s podState
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("state.json: %v", err)
	}
	if s.Token.Accessor == "" || len(s.Secrets) == 0 || s.Secrets[0].LeaseID == "" {
		t.Fatalf("state.json lacks the token accessor or the lease id (fields renamed?)")
	}
	return s
}

// deletePod deletes pod p without waiting, then waits until the database
// user the app logged in as is dropped and the pod is gone. It returns when
// the delete was issued and when the user was first seen gone.
func deletePod(t *testing.T, p testbed.Pod, user string) (deleted, userGone time.Time) {
	t.Helper()
	deleted = time.Now()
	kubectl(t, "-n", workNS, "delete", "pod", p.Metadata.Name, "--wait=false")
	waitFor(t, "database user "+user+" dropped", 60*time.Second, func() bool {
		if roleExists(t, user) {
			return false
		}
		userGone = time.Now()
		return true
	})
	waitFor(t, "pod gone", 60*time.Second, func() bool {
		_, err := node.Kubectl(context.Background(), "-n", workNS, "get", "pod", p.Metadata.Name)
		return err != nil
	})
	return deleted, userGone
}

// roleExists reports whether PostgreSQL role name exists.
func roleExists(t *testing.T, name string) bool {
	t.Helper()
	return countRoles(t, "rolname = $1", name) > 0
}

// dynamicRoles counts the PostgreSQL users Vault created (v- prefix).
func dynamicRoles(t *testing.T) int {
	t.Helper()
	return countRoles(t, "rolname LIKE 'v-%'")
}

// countRoles counts the PostgreSQL roles that match the condition where.
func countRoles(t *testing.T, where string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	c, err := bed.PGSuperuser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// tokenAlive reports whether Vault still knows the token of accessor.
func tokenAlive(t *testing.T, accessor string) bool {
	t.Helper()
	_, err := bed.Root().Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": accessor})
	return err == nil
}

// leaseAlive reports whether Vault still knows lease id.
func leaseAlive(t *testing.T, id string) bool {
	t.Helper()
	_, err := bed.Root().Logical().Write("sys/leases/lookup", map[string]any{"lease_id": id})
	return err == nil
}

// deleteAndWait deletes a kustomization's objects and waits until its pods
// are gone.
func deleteAndWait(t *testing.T, dir, sel string) {
	t.Helper()
	kubectl(t, "delete", "-k", dir, "--ignore-not-found", "--wait=true", "--timeout=90s")
	waitFor(t, "pods "+sel+" gone", 90*time.Second, func() bool { return len(pods(t, sel)) == 0 })
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// secs formats d as seconds with two decimals.
func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
