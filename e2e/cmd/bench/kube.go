package main

// Pod start on the test bed's real Kubernetes node: create → Ready of the
// same bare Pod with nothing added (the kubelet's own cost: the floor),
// with podlease's two containers, and with Vault Agent as the injector runs
// it (an init container with exit_after_auth and a native sidecar), all
// three interleaved.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// Pods of the Kubernetes pod-start benchmark.
const (
	kFloor    = "floor"
	kPodlease = "podlease"
	kAgent    = "agent"

	// kubeNS is the bench's namespace. Its pods use the host network (see
	// testbed.StartNode), which Pod Security restricted forbids.
	kubeNS = "podlease-bench"
	// kubeAuthMount is the node's kubernetes auth mount in Vault.
	kubeAuthMount = "kubernetes-bench"
	// agentConfigMap holds the Agent's two configurations.
	agentConfigMap = "vault-agent"
)

var kubeContenders = []string{kFloor, kPodlease, kAgent}

// kubeResults are the measurements of the Kubernetes part.
type kubeResults struct {
	runs   map[string][]time.Duration
	rounds []map[string]time.Duration

	kubelet, runtime      string // versions the node reports
	pack                  time.Duration
	nodeStart             time.Duration
	agentImport           time.Duration
	vaultBin              int64 // bytes of the vault binary in the Agent's image
	stripped              bool
	agentTar, plTar       int64 // image tarballs (gzip, fastest level)
	agentUsers            int   // database users an Agent pod left, median
	podleaseUsers         int   // the same for podlease, after its deletion
	elapsed               time.Duration
	date                  time.Time
	loadBefore, loadAfter string
}

// kubeStarts starts the node, configures Vault for it with setup.sh,
// measures every contender cfg.kubeRuns times, interleaved, and stops the
// node again, checking the host is as it was.
func (b *bench) kubeStarts(ctx context.Context) (res *kubeResults, err error) {
	began := time.Now()
	res = &kubeResults{runs: map[string][]time.Duration{}, date: began.UTC(), loadBefore: loadAvg()}
	// On disk, not in /dev/shm: the images and the node's containerd root
	// take about a gigabyte.
	dir, err := os.MkdirTemp("", "podlease-bench-kube-")
	if err != nil {
		return nil, err
	}
	if !b.cfg.keepPodDir {
		defer os.RemoveAll(dir)
	}

	logf("kube: packing the images (podlease as the Dockerfile builds it; Vault Agent from the bed's vault binary)")
	images, err := testbed.BuildNodeImages(ctx, filepath.Join(dir, "images"))
	if err != nil {
		return nil, err
	}
	agentTar, err := b.packAgentImage(ctx, dir, res)
	if err != nil {
		return nil, err
	}
	// BuildNodeImages returns PauseImage, PodleaseImage, AppImage.
	if fi, err := os.Stat(images[1]); err == nil {
		res.plTar = fi.Size()
	}
	res.pack = time.Since(began)

	before := testbed.TakeHostState()
	t0 := time.Now()
	node, err := testbed.StartNode(ctx, filepath.Join(dir, "node"), images, func(f string, a ...any) { logf("kube: "+f, a...) })
	if err != nil {
		return nil, err
	}
	defer func() {
		node.Stop()
		if diff := before.Diff(testbed.TakeHostState()); len(diff) > 0 {
			logf("kube: the node left the host changed:\n  %s", strings.Join(diff, "\n  "))
			if err == nil {
				err = errors.New("the node left the host changed (see above)")
			}
		} else {
			logf("kube: host hygiene: nothing left behind by the node")
		}
	}()
	res.nodeStart = time.Since(t0)
	t0 = time.Now()
	if out, err := node.Ctr(ctx, "images", "import", agentTar); err != nil {
		return nil, fmt.Errorf("import the Vault Agent image: %w\n%s", err, out)
	}
	res.agentImport = time.Since(t0)
	logf("kube: Vault Agent image imported in %s", res.agentImport.Round(time.Millisecond))

	if _, err := testbed.ConfigureNodeVault(ctx, b.bed, node, dir, kubeAuthMount, kubeNS); err != nil {
		return nil, err
	}
	k := &kubePods{node: node, vaultAddr: b.bed.VaultAddr}
	if k.renewPort, err = testbed.FreePort(); err != nil {
		return nil, err
	}
	if err := k.setup(ctx); err != nil {
		return nil, err
	}
	var info struct {
		Status struct {
			NodeInfo struct {
				KubeletVersion          string `json:"kubeletVersion"`
				ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
			} `json:"nodeInfo"`
		} `json:"status"`
	}
	if err := k.api(ctx, http.MethodGet, "/api/v1/nodes/"+node.Name, nil, &info, http.StatusOK); err != nil {
		return nil, err
	}
	res.kubelet, res.runtime = info.Status.NodeInfo.KubeletVersion, info.Status.NodeInfo.ContainerRuntimeVersion

	logf("kube: pod create → Ready: %d rounds of %s, interleaved", b.cfg.kubeRuns, strings.Join(kubeContenders, ", "))
	var agentUsers, podleaseUsers []float64
	n := len(kubeContenders)
	for round := -1; round < b.cfg.kubeRuns; round++ {
		row := map[string]time.Duration{}
		for i := range n {
			c := kubeContenders[(max(round, 0)+i)%n]
			name := fmt.Sprintf("bench-%d-%s", round, c)
			if round < 0 {
				name = "bench-warmup-" + c
			}
			usersBefore, err := b.dynamicUsers(ctx)
			if err != nil {
				return nil, err
			}
			d, err := k.startOnce(ctx, c, name, b)
			if err != nil {
				return nil, err
			}
			row[c] = d
			if err := k.deletePod(ctx, name); err != nil {
				return nil, err
			}
			usersAfter, err := b.dynamicUsers(ctx)
			if err != nil {
				return nil, err
			}
			switch {
			case round < 0:
			case c == kAgent:
				agentUsers = append(agentUsers, float64(usersAfter-usersBefore))
			case c == kPodlease:
				podleaseUsers = append(podleaseUsers, float64(usersAfter-usersBefore))
			}
		}
		if round >= 0 {
			for c, d := range row {
				res.runs[c] = append(res.runs[c], d)
			}
			res.rounds = append(res.rounds, row)
			logf("kube:   round %d/%d: floor %s, podlease %s, agent %s", round+1, b.cfg.kubeRuns,
				row[kFloor].Round(time.Millisecond), row[kPodlease].Round(time.Millisecond), row[kAgent].Round(time.Millisecond))
		}
		// The Agent's leases outlive its pod (nothing revokes them).
		if err := b.revokePrefix(ctx, "database/creds/app"); err != nil {
			return nil, err
		}
	}
	res.agentUsers = int(median(agentUsers))
	res.podleaseUsers = int(median(podleaseUsers))
	res.loadAfter = loadAvg()
	res.elapsed = time.Since(began)
	return res, nil
}

// packAgentImage writes the Vault Agent image: the vault binary the bed
// runs (a stripped copy unless --kube-strip=false) on PodleaseImage's base.
func (b *bench) packAgentImage(ctx context.Context, dir string, res *kubeResults) (string, error) {
	vaultBin, err := testbed.VaultBinary()
	if err != nil {
		return "", err
	}
	if b.cfg.kubeStrip {
		cp := filepath.Join(dir, "vault-stripped")
		if err := testbed.CopyFile(cp, vaultBin); err != nil {
			return "", err
		}
		if out, err := exec.CommandContext(ctx, "objcopy", "--strip-all", cp).CombinedOutput(); err != nil {
			return "", fmt.Errorf("strip a copy of vault (objcopy, Debian binutils; or --kube-strip=false): %v: %s", err, out)
		}
		vaultBin, res.stripped = cp, true
	}
	fi, err := os.Stat(vaultBin)
	if err != nil {
		return "", err
	}
	res.vaultBin = fi.Size()
	spec, err := testbed.VaultImageSpec(vaultBin)
	if err != nil {
		return "", err
	}
	tar := filepath.Join(dir, "images", "vault.tar")
	if err := testbed.WriteImage(tar, spec); err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	if fi, err := os.Stat(tar); err == nil {
		res.agentTar = fi.Size()
	}
	if res.stripped {
		_ = os.Remove(vaultBin)
	}
	return tar, nil
}

// dynamicUsers counts the PostgreSQL users Vault made (v- prefix).
func (b *bench) dynamicUsers(ctx context.Context) (int, error) {
	c, err := b.bed.PGSuperuser(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int
	err = c.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'").Scan(&n)
	return n, err
}

// kubePods makes and watches the bench's pods.
type kubePods struct {
	node      *testbed.Node
	vaultAddr string
	renewPort int // vault-renew's /readyz, on the host network
}

// api sends one request and decodes the JSON answer into out (if not nil),
// failing unless the status is one of want.
func (k *kubePods) api(ctx context.Context, method, path string, body, out any, want ...int) error {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := k.node.API(ctx, method, path, raw)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	ok := false
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		if len(data) > 1000 {
			data = append(data[:1000], "..."...)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// setup creates the namespace, ServiceAccount app (the one setup.sh's role
// binds) and the Agent's ConfigMap.
func (k *kubePods) setup(ctx context.Context) error {
	ns := obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": kubeNS,
		"labels": obj{"pod-security.kubernetes.io/enforce": "privileged"}}}
	if err := k.api(ctx, http.MethodPost, "/api/v1/namespaces", ns, nil, http.StatusCreated); err != nil {
		return err
	}
	sa := obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "app"}}
	if err := k.api(ctx, http.MethodPost, "/api/v1/namespaces/"+kubeNS+"/serviceaccounts", sa, nil, http.StatusCreated); err != nil {
		return err
	}
	agent := func(initMode bool) (string, error) {
		b, err := agentConfig(agentSetup{
			vaultAddr: k.vaultAddr, authMount: kubeAuthMount, role: "app", jwt: "/var/run/secrets/vault/token",
			pidFile: "/home/vault/agent.pid", sink: "/home/vault/.vault-token", dest: "/vault/secrets/db",
		}, "database/creds/app", initMode).JSON()
		return string(b), err
	}
	initCfg, err := agent(true)
	if err != nil {
		return err
	}
	sidecarCfg, err := agent(false)
	if err != nil {
		return err
	}
	cm := obj{"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj{"name": agentConfigMap},
		"data": obj{"init.json": initCfg, "sidecar.json": sidecarCfg}}
	return k.api(ctx, http.MethodPost, "/api/v1/namespaces/"+kubeNS+"/configmaps", cm, nil, http.StatusCreated)
}

type obj = map[string]any

// restricted is the container securityContext of the shipped manifests.
func restricted() obj {
	return obj{"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
		"capabilities": obj{"drop": []string{"ALL"}}, "seccompProfile": obj{"type": "RuntimeDefault"}}
}

func mount(name, path string, ro bool) obj {
	return obj{"name": name, "mountPath": path, "readOnly": ro}
}

func memoryDir(name string) obj {
	return obj{"name": name, "emptyDir": obj{"medium": "Memory", "sizeLimit": "1Mi"}}
}

// vaultToken is the projected token volume of the shipped manifests.
var vaultToken = obj{"name": "vault-token", "projected": obj{"sources": []obj{{"serviceAccountToken": obj{
	"audience": "vault", "expirationSeconds": 600, "path": "token"}}}}}

// podSpec is contender c's pod: the same app container (the pause
// program), the same pod securityContext; podlease's containers as in
// manifests/base/deployment.yaml (JSON secret file, no resources), or the
// Agent's as the injector lays them out.
func (k *kubePods) podSpec(c, name string) obj {
	app := obj{"name": "app", "image": testbed.PauseImage, "imagePullPolicy": "Never",
		"command": []string{"/pause"}, "securityContext": restricted()}
	spec := obj{
		"serviceAccountName":            "app",
		"automountServiceAccountToken":  false,
		"hostNetwork":                   true,
		"terminationGracePeriodSeconds": 30,
		"securityContext": obj{"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
			"seccompProfile": obj{"type": "RuntimeDefault"}},
		"containers": []obj{app},
	}
	switch c {
	case kPodlease:
		app["volumeMounts"] = []obj{mount("vault-secrets", "/vault/secrets", true)}
		mounts := []obj{mount("vault-secrets", "/vault/secrets", false), mount("vault-state", "/vault/state", false),
			mount("vault-token", "/var/run/secrets/vault", true)}
		port := k.renewPort
		spec["initContainers"] = []obj{
			{"name": "vault-init", "image": testbed.PodleaseImage, "imagePullPolicy": "Never",
				"command": []string{"/usr/local/bin/vault-init"},
				"args": []string{"--role=app", "--jwt-file=/var/run/secrets/vault/token", "--secret=db=database/creds/app",
					"--auth-mount=" + kubeAuthMount},
				"env":          []obj{{"name": "VAULT_ADDR", "value": k.vaultAddr}},
				"volumeMounts": mounts, "securityContext": restricted()},
			{"name": "vault-renew", "image": testbed.PodleaseImage, "imagePullPolicy": "Never", "restartPolicy": "Always",
				"command": []string{"/usr/local/bin/vault-renew"},
				"env": []obj{{"name": "PODLEASE_REVOKE_ON_EXIT", "value": "true"},
					{"name": "PODLEASE_LISTEN", "value": fmt.Sprintf("127.0.0.1:%d", port)}},
				"ports": []obj{{"name": "metrics", "containerPort": port}},
				"readinessProbe": obj{"httpGet": obj{"path": "/readyz", "port": port, "host": "127.0.0.1"},
					"periodSeconds": 10},
				"volumeMounts": mounts, "securityContext": restricted()},
		}
		spec["volumes"] = []obj{memoryDir("vault-secrets"), memoryDir("vault-state"), vaultToken}
	case kAgent:
		app["volumeMounts"] = []obj{mount("vault-secrets", "/vault/secrets", true)}
		mounts := []obj{mount("vault-secrets", "/vault/secrets", false), mount("vault-home", "/home/vault", false),
			mount("vault-config", "/vault/config", true), mount("vault-token", "/var/run/secrets/vault", true)}
		agent := func(name, cfg string) obj {
			return obj{"name": name, "image": testbed.VaultImage, "imagePullPolicy": "Never",
				"command":      []string{"/bin/vault", "agent", "-config=/vault/config/" + cfg},
				"env":          []obj{{"name": "HOME", "value": "/home/vault"}},
				"volumeMounts": mounts, "securityContext": restricted()}
		}
		sidecar := agent("vault-agent", "sidecar.json")
		sidecar["restartPolicy"] = "Always"
		spec["initContainers"] = []obj{agent("vault-agent-init", "init.json"), sidecar}
		spec["volumes"] = []obj{memoryDir("vault-secrets"), memoryDir("vault-home"), vaultToken,
			obj{"name": "vault-config", "configMap": obj{"name": agentConfigMap}}}
	}
	return obj{"apiVersion": "v1", "kind": "Pod",
		"metadata": obj{"name": name, "labels": obj{"app.kubernetes.io/name": "podlease-bench", "podlease.test/pod": c}},
		"spec":     spec}
}

// broken says why a pod will not become Ready on its own, or "".
func broken(p testbed.Pod) string {
	if p.Status.Phase == "Failed" {
		return "phase Failed"
	}
	for _, c := range p.Containers() {
		if c.RestartCount > 0 {
			return fmt.Sprintf("container %s restarted %d times", c.Name, c.RestartCount)
		}
		if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("container %s exited %d (%s)", c.Name, t.ExitCode, t.Reason)
		}
		if w := c.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			return fmt.Sprintf("container %s waiting: %s %s", c.Name, w.Reason, w.Message)
		}
	}
	return ""
}

// startOnce creates contender c's pod and returns the time from the
// create request to the watch event that shows the pod Ready; then it
// checks the secret file the pod's containers wrote.
func (k *kubePods) startOnce(ctx context.Context, c, name string, b *bench) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	body, err := json.Marshal(k.podSpec(c, name))
	if err != nil {
		return 0, err
	}
	began := time.Now()
	resp, err := k.node.API(ctx, http.MethodPost, "/api/v1/namespaces/"+kubeNS+"/pods", body)
	if err != nil {
		return 0, fmt.Errorf("create pod %s: %w", name, err)
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("create pod %s: %s: %s", name, resp.Status, bytes.TrimSpace(data))
	}
	var p testbed.Pod
	if err := json.Unmarshal(data, &p); err != nil {
		return 0, err
	}
	q := url.Values{"watch": {"1"}, "fieldSelector": {"metadata.name=" + name},
		"resourceVersion": {p.Metadata.ResourceVersion}, "timeoutSeconds": {"100"}}
	resp, err = k.node.API(ctx, http.MethodGet, "/api/v1/namespaces/"+kubeNS+"/pods?"+q.Encode(), nil)
	if err != nil {
		return 0, fmt.Errorf("watch pod %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("watch pod %s: %s", name, resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	var took time.Duration
	for {
		var ev struct {
			Type   string      `json:"type"`
			Object testbed.Pod `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return 0, fmt.Errorf("pod %s not Ready (%v); container logs:\n%s", name, err, k.podLogs(p))
		}
		if ev.Type == "ERROR" {
			return 0, fmt.Errorf("watch pod %s: error event", name)
		}
		p = ev.Object
		if p.Ready() {
			took = time.Since(began)
			break
		}
		if why := broken(p); why != "" {
			return 0, fmt.Errorf("pod %s: %s; container logs:\n%s", name, why, k.podLogs(p))
		}
	}
	if c == kFloor {
		return took, nil
	}
	// The secret, as the app container sees it.
	if err := b.checkCredFile(ctx, k.node.PodVolumePath(p.Metadata.UID, "vault-secrets", "db")); err != nil {
		return 0, fmt.Errorf("pod %s: %w", name, err)
	}
	return took, nil
}

// podLogs returns the last lines of every container log of pod p (no
// container of these pods logs a secret).
func (k *kubePods) podLogs(p testbed.Pod) string {
	dir := filepath.Join(k.node.PodLogsDir, kubeNS+"_"+p.Metadata.Name+"_"+p.Metadata.UID)
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	sort.Strings(files)
	var out strings.Builder
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		rel, _ := filepath.Rel(dir, f)
		fmt.Fprintf(&out, "--- %s\n%s\n", rel, tailLines(string(raw), 8))
	}
	if out.Len() == 0 {
		return "(none)"
	}
	return out.String()
}

// deletePod deletes pod name and waits until it is gone.
func (k *kubePods) deletePod(ctx context.Context, name string) error {
	path := "/api/v1/namespaces/" + kubeNS + "/pods/" + name
	if err := k.api(ctx, http.MethodDelete, path, nil, nil, http.StatusOK, http.StatusAccepted); err != nil {
		return err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := k.api(ctx, http.MethodGet, path, nil, nil, http.StatusNotFound)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("pod %s not gone after 90s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pairRatios returns num/den of every round.
func (r *kubeResults) pairRatios(num, den string) []float64 {
	var out []float64
	for _, row := range r.rounds {
		if a, b := row[num], row[den]; a > 0 && b > 0 {
			out = append(out, float64(a)/float64(b))
		}
	}
	return out
}

// pairDiffs returns num − den of every round, in ms.
func (r *kubeResults) pairDiffs(num, den string) []float64 {
	var out []float64
	for _, row := range r.rounds {
		if a, b := row[num], row[den]; a > 0 && b > 0 {
			out = append(out, ms(a-b))
		}
	}
	return out
}

func durMS(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = ms(d)
	}
	return out
}

// kubeHeading starts the Kubernetes section of bench/results.md; the
// section runs to the end of the file.
const kubeHeading = "## Pod start on a real Kubernetes node"

// markdown renders the Kubernetes section.
func (r *kubeResults) markdown(c config) string {
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	fl, pl, ag := durMS(r.runs[kFloor]), durMS(r.runs[kPodlease]), durMS(r.runs[kAgent])
	plFloor, agPl := r.pairRatios(kPodlease, kFloor), r.pairRatios(kAgent, kPodlease)

	p("%s\n\n", kubeHeading)
	p("Generated on %s by `make bench` (every section) or `make bench BENCH_FLAGS=--only=kube` (this section only); %s for this part ", r.date.Format("2006-01-02 15:04 UTC"), r.elapsed.Round(time.Second))
	p("(images packed in %s, node Ready in %s, Vault Agent image imported in %s; load average %s before, %s after). ",
		r.pack.Round(time.Second), r.nodeStart.Round(time.Second), r.agentImport.Round(time.Second), r.loadBefore, r.loadAfter)
	p("The test bed's single-node cluster (kubelet %s, %s, runc; hostNetwork pods, see `testbed.StartNode`), Vault configured by `manifests/vault/setup.sh` against the real API server: every login is a real TokenReview. ", r.kubelet, r.runtime)
	p("*Create → Ready* runs from the bench's POST of a bare Pod (no Deployment controller in the path) to the watch event showing the Pod's Ready condition True, as a client on the node sees it. ")
	p("%d rounds, the three pods interleaved (order rotated each round, one discarded warm-up round); each pod is deleted and gone before the next is created; ratios are taken pair by pair within a round, then the median. ", len(r.rounds))
	p("After every Ready, the secret file in the pod's Memory emptyDir was checked: a `v-…` user whose password logs in to PostgreSQL.\n\n")
	p("The three pods share the pod securityContext of `manifests/base` (uid 65532, fsGroup) and one app container (the pause program, restricted container securityContext); no resource requests or limits:\n\n")
	p("- **floor**: the app container alone: the kubelet's own cost (sandbox, one container).\n")
	p("- **podlease**: plus init container `vault-init` and native sidecar `vault-renew` (with its `/readyz` readiness probe) as in `manifests/base/deployment.yaml`, the emptyDirs and the projected `vault` token; the secret in vault-init's default JSON format.\n")
	stripped := "not stripped"
	if r.stripped {
		stripped = "stripped with `objcopy --strip-all`"
	}
	p("- **Vault Agent**: as the Vault Agent injector lays it out: init container `vault agent` with `exit_after_auth` and native sidecar `vault agent`, kubernetes auto-auth on the same mount and role, a token sink in a Memory emptyDir, one template rendering `database/creds/app` as JSON; configuration from a ConfigMap (the injector passes it in an environment variable through a shell, which this image has none of). ")
	p("Image `%s` packed by the same test-bed code as podlease's (same base, user 65532), holding the `vault` binary of the Vault build the bed runs, %s (%s; image tarball %s vs podlease's %s).\n\n", testbed.VaultImage, stripped, mib(r.vaultBin), mib(r.agentTar), mib(r.plTar))

	p("| pod | create → Ready median | p10 | p90 | min | max |\n|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		label string
		xs    []float64
	}{{"floor (the app alone)", fl}, {"podlease (vault-init + vault-renew)", pl}, {"Vault Agent (init + sidecar)", ag}} {
		p("| %s | **%.0f ms** | %.0f | %.0f | %.0f | %.0f |\n", row.label, median(row.xs), quantile(row.xs, .1), quantile(row.xs, .9), minOf(row.xs), maxOf(row.xs))
	}
	p("\n| ratio (create → Ready) | paired median | p10 | p90 | ratio of medians |\n|---|---|---|---|---|\n")
	p("| podlease / floor | **%.2fx** | %.2fx | %.2fx | %.2fx |\n", median(plFloor), quantile(plFloor, .1), quantile(plFloor, .9), median(pl)/median(fl))
	p("| Vault Agent / podlease | **%.2fx** | %.2fx | %.2fx | %.2fx |\n\n", median(agPl), quantile(agPl, .1), quantile(agPl, .9), median(ag)/median(pl))
	p("Time added to the pod's start (paired median of the differences): podlease %.0f ms over the floor, Vault Agent %.0f ms over the floor. ",
		median(r.pairDiffs(kPodlease, kFloor)), median(r.pairDiffs(kAgent, kFloor)))
	p("Database users left behind per pod once it was deleted (median): podlease %d (vault-renew revokes on exit), Vault Agent %d (its init container and sidecar each read the secret, and nothing revokes; the bench revokes them after each round).\n\n", r.podleaseUsers, r.agentUsers)
	p("Flags: --kube-runs %d --kube-strip=%v\n", c.kubeRuns, c.kubeStrip)
	return w.String()
}

// minOf and maxOf are the least and the greatest of xs, 0 for none.
func minOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Min(xs)
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

// splice composes bench/results.md from the local sections (everything
// before kubeHeading) and the Kubernetes section (kubeHeading to the end),
// taking from the existing file old whichever part this run did not
// measure (local or kube empty).
func splice(old, local, kube string) string {
	oldLocal, oldKube, found := strings.Cut(old, kubeHeading)
	if found {
		oldKube = kubeHeading + oldKube
	}
	if local == "" {
		local = oldLocal
	}
	if kube == "" {
		kube = oldKube
	}
	local = strings.TrimRight(local, "\n")
	if kube == "" {
		return local + "\n"
	}
	if local == "" {
		return kube
	}
	return local + "\n\n" + kube
}
