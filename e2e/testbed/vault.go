package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// Names of the Vault objects the bed configures.
const (
	// DBMount is the database secrets engine mount.
	DBMount = "database"
	// DBConnection is the PostgreSQL connection of DBMount.
	DBConnection = "pg"
	// DBRole is the dynamic database role (database/creds/app).
	DBRole = "app"
	// StaticRole is the static database role for PGStaticUser
	// (database/static-creds/app-static).
	StaticRole = "app-static"
	// KVPath is the KV v2 secret the app policy may read.
	KVPath = "secret/data/app"
	// ForbiddenKVPath is a KV v2 secret that exists but the app policy may
	// not read.
	ForbiddenKVPath = "secret/data/forbidden"
	// KVEndpoint is the "endpoint" field of KVPath; "api_key" is random.
	KVEndpoint = "https://api.example"
	// Policy is the policy every auth role of the bed grants.
	Policy = "app"
	// Role is the role name in every auth method (kubernetes, jwt, approle).
	Role = "app"
	// Namespace and ServiceAccount are the Kubernetes identity the
	// kubernetes and jwt roles accept.
	Namespace      = "default"
	ServiceAccount = "app"
)

// PolicyHCL is the text of Policy: what a pod running podlease needs.
const PolicyHCL = `
path "database/creds/*" {
  capabilities = ["read"]
}
path "database/static-creds/app-static" {
  capabilities = ["read"]
}
path "secret/data/app" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}
path "sys/leases/lookup" {
  capabilities = ["update"]
}
`

// Default TTLs of the bed's roles.
const (
	defaultTTL = time.Hour
	maxTTL     = 24 * time.Hour
)

// vaultServer is a Vault dev server.
type vaultServer struct {
	addr  string // http://127.0.0.1:port
	host  string // 127.0.0.1:port
	token string
	proc  *proc
}

// VaultBinary finds the vault binary: env PODLEASE_VAULT_BIN, else vault on
// PATH, else bin/vault in the repository root.
func VaultBinary() (string, error) {
	if p := os.Getenv("PODLEASE_VAULT_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("PODLEASE_VAULT_BIN: %w (run `make vault` to build one)", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("no vault binary: PODLEASE_VAULT_BIN is unset, there is no vault on PATH, and %w; run `make vault` in the repository", err)
	}
	p := filepath.Join(root, "bin", "vault")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no vault binary: PODLEASE_VAULT_BIN is unset, there is no vault on PATH and no %s; run `make vault` in %s", p, root)
	}
	return p, nil
}

// RepoRoot walks up from the working directory to the directory whose
// go.mod declares module github.com/podlease/podlease.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isRootModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of github.com/podlease/podlease) not found above the working directory")
		}
		dir = parent
	}
}

func isRootModule(goMod string) bool {
	f, err := os.Open(goMod)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == "github.com/podlease/podlease"
		}
	}
	return false
}

// startVault starts a dev server on a free port and waits until it is
// healthy. The root token reaches it only through VAULT_DEV_ROOT_TOKEN_ID.
func startVault(ctx context.Context, bin, bedDir string) (*vaultServer, error) {
	var err error
	v := &vaultServer{token: "root-" + randomHex(16)}
	logPath := filepath.Join(bedDir, "vault.log")
	home := filepath.Join(bedDir, "vault-home")
	if err := os.Mkdir(home, 0o700); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = v.run(ctx, bin, home, logPath)
		if err == nil {
			return v, nil
		}
		v.stop()
		if !errors.Is(err, errEarlyExit) || attempt == 3 {
			return nil, err
		}
	}
}

func (v *vaultServer) run(ctx context.Context, bin, home, logPath string) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	v.host = fmt.Sprintf("127.0.0.1:%d", port)
	v.addr = "http://" + v.host
	cmd := exec.Command(bin, "server", "-dev",
		"-dev-listen-address="+v.host, "-dev-no-store-token")
	cmd.Dir = home
	cmd.Env = minimalEnv(home, "VAULT_DEV_ROOT_TOKEN_ID="+v.token)
	if v.proc, err = startProc("vault", cmd, logPath, syscall.SIGKILL); err != nil {
		return err
	}

	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v.proc.exited() {
			return fmt.Errorf("%w: %w", errEarlyExit, v.proc.exitError())
		}
		// 200 means initialized, unsealed and active.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, v.addr+"/v1/sys/health", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health: %s", resp.Status)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("vault on %s not healthy (log %s): %w", v.host, logPath, errors.Join(ctx.Err(), err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (v *vaultServer) stop() {
	if v == nil || v.proc == nil {
		return
	}
	v.proc.stop(syscall.SIGTERM, 5*time.Second)
	v.proc = nil
}

// configure sets Vault up the way a user would, with the root token.
func (b *Bed) configure(ctx context.Context) error {
	return b.configureVault(ctx, b.Root(), true)
}

// configureVault sets up the Vault c talks to (with a root token) the way
// configure does the dev server: policy, database engine on the bed's
// PostgreSQL, KV secrets, and the kubernetes, jwt and approle auth methods.
// withStatic adds the static role, which rotates PGStaticUser's password:
// only one Vault may manage that user.
func (b *Bed) configureVault(ctx context.Context, c *api.Client, withStatic bool) error {
	sys := c.Sys()
	type step struct {
		what string
		do   func() error
	}
	steps := []step{
		{"put policy app", func() error { return sys.PutPolicyWithContext(ctx, Policy, PolicyHCL) }},
		{"mount database", func() error {
			return sys.MountWithContext(ctx, DBMount, &api.MountInput{Type: "database"})
		}},
		{"configure database/config/pg", func() error {
			return write(ctx, c, DBMount+"/config/"+DBConnection, map[string]any{
				"plugin_name":             "postgresql-database-plugin",
				"connection_url":          fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/%s?sslmode=disable", b.PGAddr, PGDatabase),
				"username":                PGAdminUser,
				"password":                b.pg.adminPass,
				"password_authentication": "scram-sha-256",
				"allowed_roles":           "*",
			})
		}},
		{"create database role app", func() error { return createDBRole(ctx, c, DBRole, defaultTTL, maxTTL) }},
		{"write " + KVPath, func() error {
			return write(ctx, c, KVPath, map[string]any{"data": map[string]any{
				"api_key": b.KVAPIKey, "endpoint": KVEndpoint,
			}})
		}},
		{"write " + ForbiddenKVPath, func() error {
			return write(ctx, c, ForbiddenKVPath, map[string]any{"data": map[string]any{"secret": randomHex(16)}})
		}},
		{"enable kubernetes auth", func() error {
			return sys.EnableAuthWithOptionsWithContext(ctx, "kubernetes", &api.EnableAuthOptions{Type: "kubernetes"})
		}},
		{"configure auth/kubernetes", func() error {
			return write(ctx, c, "auth/kubernetes/config", map[string]any{
				"kubernetes_host":      b.TokenReviewURL,
				"kubernetes_ca_cert":   b.kube.caPEM(),
				"token_reviewer_jwt":   b.kube.reviewerJWT,
				"disable_local_ca_jwt": true,
				"issuer":               Issuer,
			})
		}},
		{"create kubernetes role app", func() error { return createK8sRole(ctx, c, Role, defaultTTL, maxTTL, Policy) }},
		{"enable jwt auth", func() error {
			return sys.EnableAuthWithOptionsWithContext(ctx, "jwt", &api.EnableAuthOptions{Type: "jwt"})
		}},
		{"configure auth/jwt", func() error {
			return write(ctx, c, "auth/jwt/config", map[string]any{
				"jwt_validation_pubkeys": []string{b.PublicKeyPEM},
				"bound_issuer":           Issuer,
			})
		}},
		{"create jwt role app", func() error {
			return write(ctx, c, "auth/jwt/role/"+Role, map[string]any{
				"role_type":       "jwt",
				"user_claim":      "sub",
				"bound_audiences": []string{Audience},
				"bound_subject":   "system:serviceaccount:" + Namespace + ":" + ServiceAccount,
				"token_policies":  []string{Policy},
				"token_ttl":       seconds(defaultTTL),
				"token_max_ttl":   seconds(maxTTL),
			})
		}},
		{"enable approle auth", func() error {
			return sys.EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"})
		}},
		{"create approle role app", func() error {
			return write(ctx, c, "auth/approle/role/"+Role, map[string]any{
				"token_policies": []string{Policy},
				"token_ttl":      seconds(defaultTTL),
				"token_max_ttl":  seconds(maxTTL),
			})
		}},
	}
	if withStatic {
		steps = append(steps, step{"create static role app-static", func() error {
			return write(ctx, c, DBMount+"/static-roles/"+StaticRole, map[string]any{
				"db_name":         DBConnection,
				"username":        PGStaticUser,
				"rotation_period": "1h",
			})
		}})
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("configure vault: %s: %w", s.what, err)
		}
	}
	return nil
}

// CreateDBRole creates (or replaces) dynamic database role name on the
// bed's PostgreSQL, with the TTLs given: the user gets LOGIN until the
// lease expires and SELECT on the tables of app; revoking the lease drops
// the user.
func (b *Bed) CreateDBRole(name string, defaultTTL, maxTTL time.Duration) error {
	return createDBRole(context.Background(), b.Root(), name, defaultTTL, maxTTL)
}

func createDBRole(ctx context.Context, c *api.Client, name string, defaultTTL, maxTTL time.Duration) error {
	return write(ctx, c, DBMount+"/roles/"+name, map[string]any{
		"db_name": DBConnection,
		"creation_statements": []string{
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
			`GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";`,
		},
		"revocation_statements": []string{
			`REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM "{{name}}";`,
			`DROP ROLE IF EXISTS "{{name}}";`,
		},
		"default_ttl": seconds(defaultTTL),
		"max_ttl":     seconds(maxTTL),
	})
}

// CreateK8sRole creates (or replaces) kubernetes auth role name for service
// account Namespace/ServiceAccount (default/app) and audience Audience,
// granting policies with the token TTLs given.
func (b *Bed) CreateK8sRole(name string, tokenTTL, tokenMaxTTL time.Duration, policies ...string) error {
	return createK8sRole(context.Background(), b.Root(), name, tokenTTL, tokenMaxTTL, policies...)
}

func createK8sRole(ctx context.Context, c *api.Client, name string, tokenTTL, tokenMaxTTL time.Duration, policies ...string) error {
	return write(ctx, c, "auth/kubernetes/role/"+name, map[string]any{
		"bound_service_account_names":      []string{ServiceAccount},
		"bound_service_account_namespaces": []string{Namespace},
		"audience":                         Audience,
		"token_policies":                   policies,
		"token_ttl":                        seconds(tokenTTL),
		"token_max_ttl":                    seconds(tokenMaxTTL),
	})
}

// AppRoleCreds writes the role id and a fresh secret id of approle role
// Role to dir/role-id and dir/secret-id, mode 0600, and returns the paths.
func (b *Bed) AppRoleCreds(dir string) (roleIDFile, secretIDFile string, err error) {
	ctx := context.Background()
	c := b.Root()
	rid, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/"+Role+"/role-id")
	if err != nil {
		return "", "", fmt.Errorf("read approle role id: %w", err)
	}
	sid, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+Role+"/secret-id", nil)
	if err != nil {
		return "", "", fmt.Errorf("generate approle secret id: %w", err)
	}
	roleID, _ := rid.Data["role_id"].(string)
	secretID, _ := sid.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		return "", "", errors.New("approle answered without role_id or secret_id")
	}
	roleIDFile = filepath.Join(dir, "role-id")
	secretIDFile = filepath.Join(dir, "secret-id")
	if err := writeFileAtomic(roleIDFile, []byte(roleID), 0o600); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(secretIDFile, []byte(secretID), 0o600); err != nil {
		return "", "", err
	}
	return roleIDFile, secretIDFile, nil
}

// Root returns a new Vault client for the dev server with the root token.
func (b *Bed) Root() *api.Client {
	return b.Client(b.RootToken)
}

// Client returns a new Vault client for the dev server with token (none if
// empty). The test process's VAULT_ADDR, VAULT_TOKEN and VAULT_NAMESPACE
// do not apply.
func (b *Bed) Client(token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = b.VaultAddr
	return newClient(cfg, token)
}

// newClient is a client for cfg holding token (none if empty), whatever
// VAULT_TOKEN and VAULT_NAMESPACE say.
func newClient(cfg *api.Config, token string) *api.Client {
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(fmt.Sprintf("testbed: vault client: %v", err)) // only bad TLS settings fail here
	}
	c.ClearToken()
	c.ClearNamespace()
	if token != "" {
		c.SetToken(token)
	}
	return c
}

func write(ctx context.Context, c *api.Client, path string, data map[string]any) error {
	_, err := c.Logical().WriteWithContext(ctx, path, data)
	return err
}

func seconds(d time.Duration) int { return int(d / time.Second) }
