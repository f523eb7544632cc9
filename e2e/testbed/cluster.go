package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// ClusterSize is the number of Vault servers of a Cluster: the smallest
// Raft cluster that keeps a quorum with one node down.
const ClusterSize = 3

// Cluster is a Vault HA cluster of ClusterSize servers with integrated
// storage (Raft) on loopback ports, built from the same vault binary as the
// bed's dev server but set up as an operator would: `operator init` (one
// key share), unseal, `retry_join` to the other nodes. It is configured
// like the bed's dev server (policy, database engine on the bed's
// PostgreSQL, kubernetes auth against the bed's TokenReview stand-in, KV)
// and has a file audit device.
//
// Addr is a load-balanced address: a round-robin TCP proxy over the nodes
// in rotation, as a Kubernetes Service over Vault's ready pods would be.
type Cluster struct {
	// Nodes are the servers, in the order they were started; Nodes[0] was
	// initialised.
	Nodes []*ClusterNode
	// Addr is the load balancer's URL ("http://127.0.0.1:PORT").
	Addr string
	// RootToken is the root token from `operator init`.
	RootToken string
	// Multiplier is Raft's performance_multiplier (Vault's default is 5;
	// 1 is the fastest failover).
	Multiplier int
	// Dir holds the nodes' data and logs, and AuditLog.
	Dir string
	// AuditLog is the file audit device's log.
	AuditLog string

	bed       *Bed
	vaultBin  string
	unsealKey string
	lb        *Balancer
	logf      func(string, ...any)
	closeOnce sync.Once
}

// ClusterNode is one Vault server of a Cluster.
type ClusterNode struct {
	// Name is the Raft node id ("vault-1").
	Name string
	// Addr is the node's own API URL ("http://127.0.0.1:PORT"), its
	// api_addr: where a standby redirects to when it is the active node.
	Addr string
	// HostPort is Addr's host:port.
	HostPort string
	// Log is the server's log file.
	Log string
	// ClusterHostPort is where the node listens for the other nodes
	// (Raft and request forwarding), its cluster_addr.
	ClusterHostPort string

	config string
	home   string
	mu     sync.Mutex
	proc   *proc
}

// StartCluster starts, initialises, unseals, joins and configures a
// cluster under bed's Dir (so that bed.Close removes it too) with Raft
// performance_multiplier multiplier, and returns once every node is
// unsealed and a Raft voter. The caller must Close it; should the test
// binary die first, the servers die with it.
func StartCluster(ctx context.Context, bed *Bed, multiplier int) (_ *Cluster, err error) {
	began := time.Now()
	vaultBin, err := VaultBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(bed.Dir, "vault-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Multiplier: multiplier,
		Dir:        dir,
		AuditLog:   filepath.Join(dir, "audit.log"),
		bed:        bed,
		vaultBin:   vaultBin,
		logf:       bed.logf,
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for i := range ClusterSize {
		apiPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		clusterPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		n := &ClusterNode{
			Name:            fmt.Sprintf("vault-%d", i+1),
			HostPort:        fmt.Sprintf("127.0.0.1:%d", apiPort),
			ClusterHostPort: fmt.Sprintf("127.0.0.1:%d", clusterPort),
			home:            filepath.Join(dir, fmt.Sprintf("vault-%d", i+1)),
		}
		n.Addr = "http://" + n.HostPort
		n.Log = filepath.Join(n.home, "vault.log")
		n.config = filepath.Join(n.home, "config.hcl")
		if err := os.MkdirAll(filepath.Join(n.home, "raft"), 0o700); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := os.WriteFile(n.config, []byte(c.nodeConfig(n)), 0o600); err != nil {
			return nil, err
		}
		if err := c.startNode(n); err != nil {
			return nil, err
		}
	}
	if c.lb, err = NewBalancer(c.Nodes); err != nil {
		return nil, err
	}
	c.Addr = "http://" + c.lb.Addr()
	for _, n := range c.Nodes {
		c.lb.SetInRotation(n, false)
	}

	first := c.Nodes[0]
	if err := waitAnswers(ctx, first); err != nil {
		return nil, err
	}
	init, err := c.NodeClient(first, "").Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return nil, fmt.Errorf("operator init on %s: %w", first.Name, err)
	}
	c.unsealKey, c.RootToken = init.KeysB64[0], init.RootToken
	// Followers can only unseal once retry_join reached the initialised
	// node and got its challenge; Unseal retries until then. A follower
	// can also get stuck halfway through joining, every unseal then
	// failing with "invalid key size 0" (a known Vault bug, seen here on
	// a loaded machine): it starts again with empty Raft data, which is
	// what an operator does.
	for _, n := range c.Nodes {
		err := c.Unseal(ctx, n)
		for try := 0; errors.Is(err, errStuckJoin) && n != first && try < 2; try++ {
			c.logf("testbed: %s stuck joining the cluster (%v); starting it again with empty Raft data", n.Name, err)
			c.Kill(n)
			if err := os.RemoveAll(filepath.Join(n.home, "raft")); err != nil {
				return nil, err
			}
			if err := os.MkdirAll(filepath.Join(n.home, "raft"), 0o700); err != nil {
				return nil, err
			}
			if err := c.Restart(ctx, n); err != nil {
				return nil, err
			}
			err = c.Unseal(ctx, n)
		}
		if err != nil {
			return nil, err
		}
	}
	root := c.NodeClient(first, c.RootToken)
	// Autopilot promotes a new node to voter once it has been healthy
	// this long (default 10s); a test bed need not wait that long.
	if _, err := root.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration", map[string]any{
		"server_stabilization_time": "1s",
	}); err != nil {
		return nil, fmt.Errorf("autopilot configuration: %w", err)
	}
	// The dev server has a KV v2 engine at secret/; a real server does
	// not. A new KV v2 mount answers writes after a moment's upgrade.
	if err := root.Sys().MountWithContext(ctx, "secret", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return nil, fmt.Errorf("mount secret/: %w", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := root.Logical().WriteWithContext(ctx, "secret/data/probe", map[string]any{"data": map[string]any{"ok": "1"}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("secret/ (KV v2) not writable: %w", err)
		}
	}
	if err := bed.configureVault(ctx, root, false); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := root.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &api.EnableAuditOptions{
		Type:    "file",
		Options: map[string]string{"file_path": c.AuditLog},
	}); err != nil {
		return nil, fmt.Errorf("enable the file audit device: %w", err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return nil, err
	}
	c.logf("testbed: vault cluster ready in %s (raft performance_multiplier %d): %s, load balancer %s",
		time.Since(began).Round(time.Millisecond), multiplier, c.nodeList(), c.Addr)
	return c, nil
}

func (c *Cluster) nodeList() string {
	var s []string
	for _, n := range c.Nodes {
		s = append(s, n.Name+" "+n.Addr)
	}
	return strings.Join(s, ", ")
}

// nodeConfig is n's server configuration: Raft storage with a retry_join
// stanza per node and a plain-HTTP listener on loopback. The nodes reach
// each other directly: a proxy in the test process would add its own
// scheduling delays to Raft's heartbeats, which with
// performance_multiplier 1 must arrive within 500ms.
func (c *Cluster) nodeConfig(n *ClusterNode) string {
	var joins strings.Builder
	for _, o := range c.Nodes {
		fmt.Fprintf(&joins, "  retry_join {\n    leader_api_addr = %q\n  }\n", o.Addr)
	}
	return fmt.Sprintf(`storage "raft" {
  path = %q
  node_id = %q
  performance_multiplier = %d
%s}

listener "tcp" {
  address = %q
  cluster_address = %q
  tls_disable = true
}

api_addr = %q
cluster_addr = "https://%s"
disable_mlock = true
ui = false
`, filepath.Join(n.home, "raft"), n.Name, c.Multiplier, joins.String(), n.HostPort, n.ClusterHostPort, n.Addr, n.ClusterHostPort)
}

// startNode starts n's server process.
func (c *Cluster) startNode(n *ClusterNode) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil && !n.proc.exited() {
		return fmt.Errorf("%s is running", n.Name)
	}
	cmd := exec.Command(c.vaultBin, "server", "-config", n.config)
	cmd.Dir = n.home
	cmd.Env = minimalEnv(n.home)
	p, err := startProc(n.Name, cmd, n.Log, syscall.SIGKILL)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// Kill kills n's server with SIGKILL, as a crash or an OOM kill would, and
// takes it out of the load balancer's rotation.
func (c *Cluster) Kill(n *ClusterNode) {
	c.lb.SetInRotation(n, false)
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil {
		p.stop(syscall.SIGKILL, 5*time.Second)
	}
}

// Restart starts n's server again after Kill, on the same ports and data.
// It comes up sealed; unseal it with Unseal.
func (c *Cluster) Restart(ctx context.Context, n *ClusterNode) error {
	if err := c.startNode(n); err != nil {
		return err
	}
	return waitAnswers(ctx, n)
}

// errStuckJoin is Unseal's error for a node that kept answering "invalid
// key size 0": it joined Raft but never got the keyring, and no unseal
// will work until it starts again with empty Raft data.
var errStuckJoin = errors.New("stuck joining")

// Unseal unseals n with the cluster's key, retrying until n accepts it
// (a node that has not joined yet answers "not initialized"), and puts it
// back in the load balancer's rotation. It gives up after a minute, or
// after 10s of errStuckJoin's answer.
func (c *Cluster) Unseal(ctx context.Context, n *ClusterNode) error {
	cl := c.NodeClient(n, "")
	deadline := time.Now().Add(60 * time.Second)
	var stuckSince time.Time
	for {
		st, err := cl.Sys().UnsealWithContext(ctx, c.unsealKey)
		if err == nil && !st.Sealed {
			c.lb.SetInRotation(n, true)
			return nil
		}
		if err == nil {
			err = errors.New("still sealed")
		}
		if n.exited() {
			return fmt.Errorf("%s exited (log %s):\n%s", n.Name, n.Log, tail(n.Log, 20))
		}
		switch {
		case !strings.Contains(err.Error(), "invalid key size 0"):
			stuckSince = time.Time{}
		case stuckSince.IsZero():
			stuckSince = time.Now()
		case time.Since(stuckSince) > 10*time.Second:
			return fmt.Errorf("unseal %s (log %s): %w: %w", n.Name, n.Log, errStuckJoin, err)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("unseal %s (log %s): %w", n.Name, n.Log, errors.Join(ctx.Err(), err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *ClusterNode) exited() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc == nil || n.proc.exited()
}

// Health is a node's answer to sys/health.
type Health struct {
	Code        int // 200 active, 429 standby, 503 sealed, 0 no answer
	Initialized bool
	Sealed      bool
	Standby     bool
}

// Health asks n's sys/health, with a 1s timeout.
func (n *ClusterNode) Health(ctx context.Context) Health {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.Addr+"/v1/sys/health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Health{}
	}
	defer resp.Body.Close()
	var h Health
	_ = json.NewDecoder(resp.Body).Decode(&h)
	h.Code = resp.StatusCode
	return h
}

// waitAnswers waits until n answers sys/health at all.
func waitAnswers(ctx context.Context, n *ClusterNode) error {
	deadline := time.Now().Add(60 * time.Second)
	for n.Health(ctx).Code == 0 {
		if n.exited() {
			return fmt.Errorf("%s exited (log %s):\n%s", n.Name, n.Log, tail(n.Log, 20))
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer (log %s)", n.Name, n.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Active returns the node that answers sys/health as active, or nil.
func (c *Cluster) Active(ctx context.Context) *ClusterNode {
	for _, n := range c.Nodes {
		if n.Health(ctx).Code == http.StatusOK {
			return n
		}
	}
	return nil
}

// WaitHealthy waits (up to a minute) until every node is unsealed, one is
// active, and Raft's autopilot counts every node as a healthy voter: the
// cluster can lose any one node again.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	var why string
	for {
		why = c.unhealthy(ctx)
		if why == "" {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("vault cluster not healthy after a minute: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) unhealthy(ctx context.Context) string {
	active := 0
	for _, n := range c.Nodes {
		switch h := n.Health(ctx); {
		case h.Code == 0:
			return n.Name + " does not answer"
		case h.Sealed:
			return n.Name + " is sealed"
		case h.Code == http.StatusOK:
			active++
		}
	}
	if active != 1 {
		return fmt.Sprintf("%d active nodes", active)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := c.Root().Logical().ReadWithContext(ctx, "sys/storage/raft/autopilot/state")
	if err != nil || s == nil {
		return fmt.Sprintf("autopilot state: %v", err)
	}
	if ok, _ := s.Data["healthy"].(bool); !ok {
		return "autopilot: not healthy"
	}
	servers, _ := s.Data["servers"].(map[string]any)
	voters := 0
	for _, v := range servers {
		m, _ := v.(map[string]any)
		if m["status"] == "voter" || m["status"] == "leader" {
			if h, _ := m["healthy"].(bool); h {
				voters++
			}
		}
	}
	if voters != len(c.Nodes) {
		return fmt.Sprintf("autopilot: %d healthy voters of %d", voters, len(c.Nodes))
	}
	return ""
}

// StepDown runs `vault operator step-down` against the active node, as an
// operator would; the root token reaches the CLI through its environment.
func (c *Cluster) StepDown(ctx context.Context, active *ClusterNode) error {
	out, err := c.CLI(ctx, active, c.RootToken, nil, "operator", "step-down")
	if err != nil {
		return fmt.Errorf("vault operator step-down on %s: %w\n%s", active.Name, err, out)
	}
	return nil
}

// CLI runs the vault CLI against n with token (none if empty) and env in
// its environment and returns its combined output.
func (c *Cluster) CLI(ctx context.Context, n *ClusterNode, token string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.vaultBin, args...)
	home := filepath.Join(c.Dir, "cli-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return "", err
	}
	env = append([]string{"VAULT_ADDR=" + n.Addr}, env...)
	if token != "" {
		env = append(env, "VAULT_TOKEN="+token)
	}
	cmd.Env = minimalEnv(home, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Root returns a client for the load-balanced address with the root token.
func (c *Cluster) Root() *api.Client {
	return clientFor(c.Addr, c.RootToken)
}

// NodeClient returns a client for node n's own address with token (none
// if empty).
func (c *Cluster) NodeClient(n *ClusterNode, token string) *api.Client {
	return clientFor(n.Addr, token)
}

// CreateDBRole creates database role name on the cluster, as
// Bed.CreateDBRole does on the dev server, but with revocation statements
// that succeed when the user is already gone: a revocation that a
// leadership change interrupts after the DROP ran is retried by the next
// active node, and must not then fail for ever on REVOKE of a missing
// user (which would leave the lease stuck in Vault).
func (c *Cluster) CreateDBRole(ctx context.Context, name string, defaultTTL, maxTTL time.Duration) error {
	return write(ctx, c.Root(), DBMount+"/roles/"+name, map[string]any{
		"db_name": DBConnection,
		"creation_statements": []string{
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
			`GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";`,
		},
		"revocation_statements": []string{
			`DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{{name}}') THEN REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM "{{name}}"; END IF; END $$;`,
			`DROP ROLE IF EXISTS "{{name}}";`,
		},
		"default_ttl": seconds(defaultTTL),
		"max_ttl":     seconds(maxTTL),
	})
}

// Close stops every server and proxy and removes Dir. It is safe to call
// more than once.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		for _, n := range c.Nodes {
			n.mu.Lock()
			p := n.proc
			n.mu.Unlock()
			p.stop(syscall.SIGTERM, 5*time.Second)
		}
		if c.lb != nil {
			c.lb.Close()
		}
		if os.Getenv("PODLEASE_KEEP_TESTBED") != "" {
			c.logf("testbed: kept %s", c.Dir)
			return
		}
		if err := os.RemoveAll(c.Dir); err != nil {
			c.logf("testbed: remove %s: %v", c.Dir, err)
		}
	})
}

// CloseBefore closes the cluster shortly before deadline if it is still
// open then, so that a test that runs into go test's -timeout (which ends
// the process without running cleanups) leaves no server or directory
// behind.
func (c *Cluster) CloseBefore(deadline time.Time) {
	go func() {
		time.Sleep(time.Until(deadline.Add(-5 * time.Second)))
		c.Close()
	}()
}

func clientFor(addr, token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	return newClient(cfg, token)
}
