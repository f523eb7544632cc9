package testbed

// A real single-node Kubernetes cluster for the end-to-end tests: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet
// built from the k8s.io/kubernetes module (scripts/ensure-kubernetes.sh),
// with Debian's containerd and runc as the container runtime.
//
// Network: pods use the host network, and everything listens on
// 127.0.0.1. These machines allow traffic to 127.0.0.0/8 only (or inside
// network namespaces the bed makes itself); hostNetwork pods reach Vault and
// PostgreSQL on loopback with no bridge, no routes and no iptables rules,
// which is the simple, verified path. A pod network in a bed-made network
// namespace would let the restricted Pod Security profile be enforced on the
// live pods; instead, the tests check that profile by a server-side dry-run
// of the unchanged manifests in a namespace that enforces it, and run the
// live (hostNetwork) pods in a namespace that does not.
//
// Host hygiene: the node must leave the shared machine as it found it.
//   - containerd and the kubelet run in a private mount namespace, made by
//     unshare(1); every mount they make (rootfs overlays, tmpfs emptyDirs,
//     projected volumes) lives and dies with it. Inside it, files holding
//     the values the kubelet wants are bind-mounted over the kernel
//     tunables it would otherwise write (protectKernelDefaults makes it only
//     check), and tmpfs hides the fixed paths containerd and the kubelet
//     use (/run/containerd, /var/log/containers, /var/lib/kubelet).
//   - Pods' cgroups live under a cgroup root of the node's own, created in
//     every hierarchy and removed at Stop.
//   - No iptables rules (makeIPTablesUtilChains: false, no kube-proxy), no
//     CNI plugin beyond loopback, no service started through the host's
//     init system; all state is under Dir.
// HostState and its Diff let a test check all this after Stop.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Commands of the node found outside the Kubernetes build.
const (
	containerdBin = "/usr/bin/containerd"
	ctrBin        = "/usr/bin/ctr"
	runcBin       = "/usr/sbin/runc"
	etcdBin       = "/usr/bin/etcd"
	cniBinDir     = "/usr/lib/cni"
)

// PauseImage is the sandbox image containerd starts for every pod; the bed
// packs it (there is no registry to pull registry.k8s.io/pause from).
const PauseImage = "podlease.test/pause:e2e"

// kernelDefaults are the tunables the kubelet sets on start (its
// setupKernelTunables) and the values it wants.
var kernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// hostPaths are fixed paths containerd and the kubelet write to whatever
// their configuration says (the shims' sockets and runc's state; the
// kubelet's log links and device-plugin socket); inside the node's mount namespace each is a
// tmpfs. A path missing on the host is created for the mount and removed at
// Stop.
var hostPaths = []string{"/run/containerd", "/var/log/containers", "/var/lib/kubelet"}

// Node is a running single-node cluster. Its exported fields are read-only.
type Node struct {
	// Dir holds every file of the node: certificates, etcd's data,
	// containerd's root and state, the kubelet's root dir and logs.
	Dir string
	// Name is the node's name: the host name, which resolves to a loopback
	// address, so that the API server reaches the kubelet on 127.0.0.1.
	Name string
	// Server is the API server's URL, https://127.0.0.1:PORT.
	Server string
	// CACert is the PEM file of the cluster CA (the API server's too).
	CACert string
	// Kubeconfig is a cluster-admin kubeconfig.
	Kubeconfig string
	// Issuer is the iss of the service-account tokens the API server signs.
	Issuer string
	// PodLogsDir is the kubelet's podLogsDir: NAMESPACE_POD_UID/CONTAINER/N.log.
	PodLogsDir string
	// ContainerdSock is containerd's socket, for ctr.
	ContainerdSock string
	// KubeletLog is the kubelet's log file.
	KubeletLog string

	binDir     string
	cgroupName string // the node's cgroup root, e.g. podlease-node-1234
	madePaths  []string
	mountNS    string // containerd's and the kubelet's mount namespace
	logf       func(string, ...any)
	procs      map[string]*proc
	client     *http.Client // admin client for health checks
}

// KubeBinDir finds the directory holding kube-apiserver, kubelet,
// kube-controller-manager, kube-scheduler and kubectl: env
// PODLEASE_KUBE_BIN_DIR, else bin/kubernetes in the repository root (made
// by scripts/ensure-kubernetes.sh).
func KubeBinDir() (string, error) {
	dir := os.Getenv("PODLEASE_KUBE_BIN_DIR")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "kubernetes")
	}
	for _, c := range []string{"kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
			return "", fmt.Errorf("kubernetes commands: %w (run scripts/ensure-kubernetes.sh, or set PODLEASE_KUBE_BIN_DIR)", err)
		}
	}
	for _, p := range []string{containerdBin, ctrBin, runcBin, etcdBin, filepath.Join(cniBinDir, "loopback")} {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("node runtime: %w (run scripts/ensure-node.sh)", err)
		}
	}
	return dir, nil
}

// KubectlBinary finds kubectl: PODLEASE_KUBE_BIN_DIR/kubectl if that is
// set, else bin/kubernetes/kubectl in the repository root (the version the
// node runs), else kubectl on PATH.
func KubectlBinary() (string, error) {
	if dir := os.Getenv("PODLEASE_KUBE_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, "kubectl")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("PODLEASE_KUBE_BIN_DIR: %w (run scripts/ensure-kubernetes.sh)", err)
		}
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, "bin", "kubernetes", "kubectl")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p, nil
	}
	return "", errors.New("no kubectl: PODLEASE_KUBE_BIN_DIR is unset, there is no bin/kubernetes/kubectl in the repository and no kubectl on PATH; run scripts/ensure-kubernetes.sh")
}

// StartNode starts the cluster with its files under dir and returns once the
// node is Ready. images are docker-archive tarballs imported into
// containerd before the kubelet starts; one of them must be PauseImage. On
// error everything started is stopped again.
//
// The node's ports are picked free and then bound by its commands, so a
// port can be taken in between (by a connection's ephemeral port, say):
// the node is then started again on other ports, at most twice more.
func StartNode(ctx context.Context, dir string, images []string, logf func(string, ...any)) (*Node, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	for attempt := 1; ; attempt++ {
		d := dir
		if attempt > 1 {
			d = fmt.Sprintf("%s-%d", dir, attempt)
		}
		n, err := startNode(ctx, d, images, logf)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return n, err
		}
		logf("testbed: a port picked for the node was taken before the node bound it; starting it again on other ports: %v", err)
	}
}

func startNode(ctx context.Context, dir string, images []string, logf func(string, ...any)) (_ *Node, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the kubernetes node needs root (containerd, runc, cgroups, mounts)")
	}
	began := time.Now()
	binDir, err := KubeBinDir()
	if err != nil {
		return nil, err
	}
	name, err := loopbackHostname()
	if err != nil {
		return nil, err
	}
	n := &Node{
		Dir:            dir,
		Name:           name,
		Issuer:         "https://kubernetes.default.svc.cluster.local",
		PodLogsDir:     filepath.Join(dir, "pod-logs"),
		ContainerdSock: filepath.Join(dir, "containerd", "containerd.sock"),
		KubeletLog:     filepath.Join(dir, "kubelet.log"),
		binDir:         binDir,
		cgroupName:     fmt.Sprintf("podlease-node-%d", os.Getpid()),
		logf:           logf,
		procs:          map[string]*proc{},
	}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	for _, d := range []string{"etcd", "containerd", "kubelet", "cni", "pod-logs", "sysctl", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	pki, err := newNodePKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("node certificates: %w", err)
	}
	n.CACert = pki.CACert

	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, cmPort, schedPort, kubeletPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	n.Server = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	// etcd.
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	if err := n.start("etcd", exec.Command(etcdBin,
		"--name=node", "--data-dir="+filepath.Join(dir, "etcd", "data"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=node="+peerURL,
	)); err != nil {
		return nil, err
	}

	// API server.
	serveCert, serveKey, err := pki.issue("apiserver", "kube-apiserver", nil,
		"127.0.0.1", "localhost", name, "10.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
	if err != nil {
		return nil, err
	}
	kcCert, kcKey, err := pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		return nil, err
	}
	adminCert, adminKey, err := pki.issue("admin", "podlease-testbed-admin", []string{"system:masters"})
	if err != nil {
		return nil, err
	}
	n.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := pki.kubeconfig(n.Kubeconfig, n.Server, adminCert, adminKey); err != nil {
		return nil, err
	}
	if n.client, err = adminClient(pki.CACert, adminCert, adminKey); err != nil {
		return nil, err
	}
	if err := n.start("kube-apiserver", exec.Command(filepath.Join(binDir, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		// A loopback address cannot go into the kubernetes Endpoints.
		"--endpoint-reconciler-type=none",
		"--cert-dir="+filepath.Join(dir, "pki"),
		"--tls-cert-file="+serveCert, "--tls-private-key-file="+serveKey,
		"--client-ca-file="+pki.CACert,
		"--kubelet-client-certificate="+kcCert, "--kubelet-client-key="+kcKey,
		// The node's InternalIP is the VM's own address, which nothing may
		// connect to; its hostname resolves to loopback.
		"--kubelet-preferred-address-types=Hostname",
		"--service-account-issuer="+n.Issuer,
		"--service-account-key-file="+pki.ServiceAccountPub,
		"--service-account-signing-key-file="+pki.ServiceAccountKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--profiling=false",
	)); err != nil {
		return nil, err
	}
	if err := n.waitHTTP(ctx, "kube-apiserver", n.Server+"/readyz", 60*time.Second); err != nil {
		return nil, err
	}

	// Controller manager and scheduler.
	if err := n.start("kube-controller-manager", exec.Command(filepath.Join(binDir, "kube-controller-manager"),
		"--kubeconfig="+n.Kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(cmPort),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--root-ca-file="+pki.CACert,
		"--service-account-private-key-file="+pki.ServiceAccountKey,
		"--flex-volume-plugin-dir="+filepath.Join(dir, "volume-plugins"),
		"--cluster-signing-cert-file="+pki.CACert, "--cluster-signing-key-file="+filepath.Join(pki.dir, "ca.key"),
		"--profiling=false",
	)); err != nil {
		return nil, err
	}
	if err := n.start("kube-scheduler", exec.Command(filepath.Join(binDir, "kube-scheduler"),
		"--kubeconfig="+n.Kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort),
		"--leader-elect=false",
		"--profiling=false",
	)); err != nil {
		return nil, err
	}

	// containerd, in a mount namespace of its own.
	if err := n.makeCgroupRoot(); err != nil {
		return nil, err
	}
	script, err := n.namespaceScript()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "containerd", "config.toml")
	if err := os.WriteFile(cfg, []byte(n.containerdConfig()), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cni", "10-loopback.conflist"),
		[]byte(`{"cniVersion": "0.4.0", "name": "loopback", "plugins": [{"type": "loopback"}]}`+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := n.start("containerd", exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-ec", script+"\nexec "+containerdBin+" --config "+cfg)); err != nil {
		return nil, err
	}
	if err := n.waitContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range images {
		if out, err := n.Ctr(ctx, "images", "import", img); err != nil {
			return nil, fmt.Errorf("import %s: %w\n%s", filepath.Base(img), err, out)
		}
	}

	// The kubelet, in containerd's mount namespace.
	nodeCert, nodeKey, err := pki.issue("kubelet", "system:node:"+name, []string{"system:nodes"})
	if err != nil {
		return nil, err
	}
	kubeletKC := filepath.Join(dir, "kubelet.kubeconfig")
	if err := pki.kubeconfig(kubeletKC, n.Server, nodeCert, nodeKey); err != nil {
		return nil, err
	}
	kubeletCfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(kubeletCfg, []byte(n.kubeletConfig(kubeletPort, pki.CACert)), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return nil, err
	}
	if err := n.start("kubelet", exec.Command("nsenter", "--mount=/proc/"+strconv.Itoa(n.procs["containerd"].cmd.Process.Pid)+"/ns/mnt", "--",
		filepath.Join(binDir, "kubelet"),
		"--config="+kubeletCfg,
		"--kubeconfig="+kubeletKC,
		"--root-dir="+filepath.Join(dir, "kubelet"),
		"--cert-dir="+filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override="+name,
		"--v=2",
	)); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	logf("node: %s Ready in %s (API server %s, files in %s)", name, time.Since(began).Round(time.Millisecond), n.Server, dir)
	return n, nil
}

// start starts one component with its log in Dir/NAME.log.
func (n *Node) start(name string, cmd *exec.Cmd) error {
	cmd.Dir = n.Dir
	cmd.Env = minimalEnv(n.Dir)
	p, err := startProc(name, cmd, filepath.Join(n.Dir, name+".log"), syscall.SIGKILL)
	if err != nil {
		return err
	}
	n.procs[name] = p
	return nil
}

// loopbackHostname returns the host name if it resolves to a loopback
// address (the kubelet refuses a loopback node IP, so the API server must
// reach it by name).
func loopbackHostname() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", err
	}
	h = strings.ToLower(h)
	addrs, err := net.LookupHost(h)
	if err == nil {
		for _, a := range addrs {
			if ip := net.ParseIP(a); ip != nil && ip.IsLoopback() {
				return h, nil
			}
		}
	}
	return "", fmt.Errorf("host name %q does not resolve to a loopback address (%v %v): the API server reaches the kubelet by the node's name", h, addrs, err)
}

// freePorts returns k distinct free ports of 127.0.0.1.
func freePorts(k int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range k {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// adminClient is an HTTP client authenticating as cluster admin.
func adminClient(caFile, certFile, keyFile string) (*http.Client, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

// waitHTTP waits until url answers 200, failing early if a component died.
func (n *Node) waitHTTP(ctx context.Context, what, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		if err := n.checkAlive(); err != nil {
			return err
		}
		resp, err := n.client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v (logs in %s)", what, limit, last, n.Dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkAlive returns an error naming the first component that has exited.
func (n *Node) checkAlive() error {
	for _, p := range n.procs {
		if p.exited() {
			return p.exitError()
		}
	}
	return nil
}

func (n *Node) waitContainerd(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := n.checkAlive(); err != nil {
			return err
		}
		if _, err := os.Stat(n.ContainerdSock); err == nil {
			if _, err := n.Ctr(ctx, "version"); err == nil {
				break
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("containerd not ready after 30s (log %s)", filepath.Join(n.Dir, "containerd.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.procs["containerd"].cmd.Process.Pid))
	if err != nil {
		return err
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if ns == self {
		return errors.New("containerd runs in the host's mount namespace: unshare failed")
	}
	n.mountNS = ns
	return nil
}

// waitReady waits until the node reports Ready.
func (n *Node) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := n.checkAlive(); err != nil {
			return err
		}
		out, err := n.Kubectl(ctx, "get", "node", n.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && strings.TrimSpace(string(out)) == "True" {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready after 90s (%s); kubelet log %s:\n%s", n.Name, strings.TrimSpace(string(out)), n.KubeletLog, tail(n.KubeletLog, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Kubectl runs kubectl as cluster admin and returns its combined output.
func (n *Node) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return n.KubectlIn(ctx, nil, args...)
}

// KubectlIn is Kubectl with stdin.
func (n *Node) KubectlIn(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(n.binDir, "kubectl"), append([]string{"--kubeconfig=" + n.Kubeconfig}, args...)...)
	cmd.Env = minimalEnv(n.Dir)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// API sends a request to the API server as cluster admin: path is the
// URL path and query (e.g. /api/v1/namespaces), body JSON or nil. The
// request has no timeout of its own, so that a watch can stream: ctx
// bounds it. The caller closes the response body.
func (n *Node) API(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.Server+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return (&http.Client{Transport: n.client.Transport}).Do(req)
}

// PodVolumePath is the path of file in emptyDir volume of the pod with
// uid, as the host reaches it through the kubelet's mount namespace (a
// Memory emptyDir is a tmpfs that only exists there).
func (n *Node) PodVolumePath(uid, volume, file string) string {
	pid := 0
	if k := n.procs["kubelet"]; k != nil {
		pid = k.cmd.Process.Pid
	}
	return filepath.Join(fmt.Sprintf("/proc/%d/root", pid), n.Dir, "kubelet", "pods", uid,
		"volumes", "kubernetes.io~empty-dir", volume, file)
}

// Ctr runs containerd's ctr in the k8s.io namespace (the CRI's).
func (n *Node) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ctrBin, append([]string{"--address", n.ContainerdSock, "--namespace", "k8s.io"}, args...)...)
	cmd.Env = minimalEnv(n.Dir)
	return cmd.CombinedOutput()
}

// makeCgroupRoot creates the node's cgroup root in every hierarchy.
func (n *Node) makeCgroupRoot() error {
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, n.cgroupName)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("set %s of %s: %w", f, d, err)
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers,
// the named systemd one, and the v2 unified one of a hybrid host).
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var hs []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			continue // symlinks such as cpu,cpuacct -> cpu
		}
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			hs = append(hs, p)
		}
	}
	return hs
}

// namespaceScript is the shell run inside the new mount namespace before
// containerd: the kernel-tunable files and the tmpfs over fixed paths.
func (n *Node) namespaceScript() (string, error) {
	var b strings.Builder
	keys := make([]string, 0, len(kernelDefaults))
	for k := range kernelDefaults {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		cur, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(string(cur)) == kernelDefaults[k] {
			continue
		}
		f := filepath.Join(n.Dir, "sysctl", strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(kernelDefaults[k]+"\n"), 0o444); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "mount --bind %s /proc/sys/%s\n", f, k)
	}
	for _, p := range hostPaths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return "", err
			}
			n.madePaths = append(n.madePaths, p)
		}
		fmt.Fprintf(&b, "mount -t tmpfs -o mode=0755 podlease-node %s\n", p)
	}
	return b.String(), nil
}

func (n *Node) containerdConfig() string {
	d := filepath.Join(n.Dir, "containerd")
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    # The VM lacks CAP_SYS_RESOURCE: the kubelet's -998 for sandboxes
    # would make runc fail.
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = %[6]q
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[7]q
      conf_dir = %[8]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), n.ContainerdSock, filepath.Join(d, "opt"),
		PauseImage, runcBin, cniBinDir, filepath.Join(n.Dir, "cni"))
}

func (n *Node) kubeletConfig(port int, caFile string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: /%s
cgroupsPerQOS: true
failSwapOn: false
failCgroupV1: false
oomScoreAdj: 0
protectKernelDefaults: true
makeIPTablesUtilChains: false
hairpinMode: none
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "50Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
podLogsDir: %q
resolvConf: %q
volumePluginDir: %q
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
staticPodPath: ""
`, port, caFile, n.ContainerdSock, n.cgroupName, n.PodLogsDir, filepath.Join(n.Dir, "resolv.conf"), filepath.Join(n.Dir, "volume-plugins"))
}

// Stop stops every component, kills whatever the pods left running, and
// removes the cgroups and paths the node made. It does not remove Dir.
func (n *Node) Stop() {
	if n == nil {
		return
	}
	n.procs["kubelet"].stop(syscall.SIGTERM, 5*time.Second)
	// Containers outlive the kubelet and containerd (their shims keep them):
	// kill everything in the node's cgroups, then the shims.
	n.killCgroupProcs()
	n.killNamespaceProcs(true)
	n.procs["containerd"].stop(syscall.SIGTERM, 5*time.Second)
	n.killNamespaceProcs(false)
	for _, c := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		n.procs[c].stop(syscall.SIGTERM, 5*time.Second)
	}
	n.removeCgroups()
	for _, p := range n.madePaths {
		if err := os.Remove(p); err != nil {
			n.logf("node: remove %s: %v", p, err)
		}
	}
	n.madePaths = nil
}

// killCgroupProcs SIGKILLs every process in the node's cgroups until none
// is left (or 10 s passed).
func (n *Node) killCgroupProcs() {
	n.killUntilGone("the node's cgroups", n.cgroupPIDs)
}

// killUntilGone SIGKILLs the processes list returns until it returns none
// or 10 s passed; where names them in the log line about survivors.
func (n *Node) killUntilGone(where string, list func() []int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := list()
		if len(pids) == 0 || time.Now().After(deadline) {
			if len(pids) > 0 {
				n.logf("node: processes still in %s: %v", where, pids)
			}
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cgroupPIDs lists the processes in any cgroup under the node's root.
func (n *Node) cgroupPIDs() []int {
	seen := map[int]bool{}
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, n.cgroupName)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var pids []int
	for p := range seen {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	return pids
}

// killNamespaceProcs SIGKILLs the processes in the node's mount namespace
// (containerd's shims, and with exceptContainerd false containerd itself),
// waiting until they are gone (or 10 s passed).
func (n *Node) killNamespaceProcs(exceptContainerd bool) {
	if n.mountNS == "" {
		return
	}
	var keep int
	if c := n.procs["containerd"]; exceptContainerd && c != nil {
		keep = c.cmd.Process.Pid
	}
	n.killUntilGone("the node's mount namespace", func() []int {
		return slices.DeleteFunc(processesInMountNS(n.mountNS), func(pid int) bool { return pid == keep })
	})
}

// processesInMountNS lists the processes whose mount namespace is ns.
func processesInMountNS(ns string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && l == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeCgroups removes the node's cgroup root, deepest first, in every
// hierarchy.
func (n *Node) removeCgroups() {
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, n.cgroupName)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, fs.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				n.logf("node: remove cgroup %s: %v", dirs[i], err)
			}
		}
	}
}
