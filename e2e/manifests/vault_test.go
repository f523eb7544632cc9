package manifests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// policyRules parses the path blocks of a Vault policy: path -> capabilities.
// Enough HCL for policy-app.hcl; anything else in a block fails the parse.
func policyRules(t *testing.T, hcl string) map[string][]string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(hcl, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	block := regexp.MustCompile(`path "([^"]+)" \{ capabilities = \[([^\]]*)\] \}`)
	text := strings.Join(lines, " ")
	rules := map[string][]string{}
	for _, m := range block.FindAllStringSubmatch(text, -1) {
		var caps []string
		if err := json.Unmarshal([]byte("["+m[2]+"]"), &caps); err != nil {
			t.Fatalf("policy path %q: capabilities [%s]: %v", m[1], m[2], err)
		}
		rules[m[1]] = caps
	}
	if rest := strings.TrimSpace(block.ReplaceAllString(text, "")); rest != "" {
		t.Fatalf("policy: cannot parse %q (the test knows only path blocks with capabilities)", rest)
	}
	return rules
}

// TestVaultPolicy checks that policy app grants what the manifests' pods
// ask for and nothing more.
func TestVaultPolicy(t *testing.T) {
	t.Parallel()
	rules := policyRules(t, repoFile(t, "manifests/vault/policy-app.hcl"))
	want := map[string][]string{
		"database/creds/app": {"read"},
		"sys/leases/renew":   {"update"},
		"sys/leases/revoke":  {"update"},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("policy app grants %v, want exactly %v", rules, want)
	}
	for _, dir := range workloadBuilds {
		for _, w := range workloads(t, dir) {
			t.Run(dir+"/"+w.name, func(t *testing.T) {
				init, _ := w.container(t, "vault-init")
				// What vault-init reads: its --secret flags and, with
				// --annotations, the pod's secret annotations.
				read := map[string]string{} // path -> where it is asked for
				for _, a := range append(slices.Clone(init.Command[1:]), init.Args...) {
					if spec, ok := strings.CutPrefix(a, "--secret="); ok {
						_, p, _ := strings.Cut(spec, "=")
						read[p] = "--secret=" + spec
					}
				}
				if cflag(init, "annotations", "") != "" {
					for k, p := range w.annotations {
						if strings.HasPrefix(k, "podlease.io/secret-") || strings.HasPrefix(k, "vault.hashicorp.com/agent-inject-secret-") {
							read[p] = k
						}
					}
				}
				for p, from := range read {
					if !slices.Contains(rules[p], "read") {
						t.Errorf("vault-init %s: policy app does not grant read on %s", from, p)
					}
				}
				if len(read) == 0 {
					t.Error("vault-init reads no secret: no --secret=NAME=PATH argument or secret annotation")
				}
			})
		}
	}
}

// devVault is a Vault dev server for one test.
type devVault struct {
	bin, addr, token string
}

// startVault starts a Vault dev server of the test's own with the test
// bed's launcher (testbed.StartDevVault): the binary is found as for every
// other test tree, and a missing one fails the test.
func startVault(t *testing.T) *devVault {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	v, err := testbed.StartDevVault(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("start vault: %v", err)
	}
	t.Cleanup(func() {
		v.Close()
		if t.Failed() {
			t.Logf("vault server log (last lines):\n%s", v.LogTail(40))
		}
	})
	return &devVault{bin: v.Bin, addr: v.Addr, token: v.RootToken}
}

// call makes a Vault API request with token and decodes the response's
// JSON into out (if not nil).
func (v *devVault) call(t *testing.T, token, method, p string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, v.addr+"/v1/"+p, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, p, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, p, err)
		}
	}
}

// read returns the data of a Vault read as the root token.
func (v *devVault) read(t *testing.T, p string) map[string]any {
	t.Helper()
	var r struct{ Data map[string]any }
	v.call(t, v.token, http.MethodGet, p, nil, &r)
	return r.Data
}

// testCACert writes a self-signed CA certificate in PEM to a file: what
// setup.sh hands Vault as the API server's CA.
func testCACert(t *testing.T) string {
	t.Helper()
	ca, err := testbed.NewCA("test-cluster-ca")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVaultSetup runs manifests/vault/setup.sh, twice, against a real Vault
// dev server and checks what a pod's token may then do and how the auth
// and database roles came out. PostgreSQL is not needed: the connection is
// written unverified (the end-to-end tests and `make demo` use it for real).
func TestVaultSetup(t *testing.T) {
	t.Parallel()
	v := startVault(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pg-password")
	jwt := filepath.Join(dir, "reviewer.jwt")
	if err := os.WriteFile(pw, []byte("not-a-real-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jwt, []byte("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"HOME="+dir,
		"VAULT_BIN="+v.bin,
		"VAULT_ADDR="+v.addr,
		"VAULT_TOKEN="+v.token,
		"WORKLOAD_NAMESPACE=shop",
		"KUBERNETES_HOST=https://127.0.0.1:6443",
		"KUBERNETES_CA_CERT_FILE="+testCACert(t),
		"TOKEN_REVIEWER_JWT_FILE="+jwt,
		"PG_CONNECTION_URL=postgresql://{{username}}:{{password}}@127.0.0.1:5432/app?sslmode=disable",
		"PG_PASSWORD_FILE="+pw,
		"PG_VERIFY_CONNECTION=false",
	)
	for run := 1; run <= 2; run++ { // the second run shows it can be re-run
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(t), "manifests", "vault", "setup.sh"))
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("setup.sh run %d: %v\n%s", run, err, out)
		}
		if strings.Contains(string(out), "not-a-real-password") {
			t.Fatalf("setup.sh printed the database password:\n%s", out)
		}
	}

	// A token as the kubernetes role hands out: policy app (and default).
	var created struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		}
	}
	v.call(t, v.token, http.MethodPost, "auth/token/create", map[string]any{"policies": []string{"app"}}, &created)
	appToken := created.Auth.ClientToken

	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"a pod's token may do what podlease needs, nothing more", func(t *testing.T) {
			want := map[string][]string{
				"database/creds/app":       {"read"},
				"sys/leases/renew":         {"update"},
				"sys/leases/revoke":        {"update"},
				"auth/token/renew-self":    {"update"},
				"auth/token/revoke-self":   {"update"},
				"database/creds/admin":     {"deny"},
				"database/config/pg":       {"deny"},
				"database/roles/app":       {"deny"},
				"sys/policy/app":           {"deny"},
				"auth/kubernetes/role/app": {"deny"},
			}
			var got map[string]any
			v.call(t, v.token, http.MethodPost, "sys/capabilities", map[string]any{"token": appToken, "paths": slices.Collect(maps.Keys(want))}, &got)
			for p, caps := range want {
				if g := fmt.Sprint(got[p]); g != fmt.Sprint(caps) {
					t.Errorf("capabilities on %s: %s, want %v", p, g, caps)
				}
			}
		}},
		{"the stored policy is policy-app.hcl", func(t *testing.T) {
			if got, want := v.read(t, "sys/policy/app")["rules"], repoFile(t, "manifests/vault/policy-app.hcl"); got != want {
				t.Errorf("policy app in Vault:\n%v\nwant the file's text:\n%s", got, want)
			}
		}},
		{"kubernetes role app: ServiceAccount app of the namespace, audience vault", func(t *testing.T) {
			got := v.read(t, "auth/kubernetes/role/app")
			want := map[string]string{
				"bound_service_account_names":      "[app]",
				"bound_service_account_namespaces": "[shop]",
				"audience":                         "vault",
				"token_policies":                   "[app]",
				"token_ttl":                        "3600",
				"token_max_ttl":                    "86400",
			}
			for k, w := range want {
				if g := fmt.Sprint(got[k]); g != w {
					t.Errorf("%s = %s, want %s", k, g, w)
				}
			}
		}},
		{"kubernetes auth config: the API server, its CA and the reviewer token", func(t *testing.T) {
			got := v.read(t, "auth/kubernetes/config")
			if got["kubernetes_host"] != "https://127.0.0.1:6443" || !strings.Contains(fmt.Sprint(got["kubernetes_ca_cert"]), "BEGIN CERTIFICATE") || got["disable_local_ca_jwt"] != true {
				t.Errorf("auth/kubernetes/config = %v", got)
			}
		}},
		{"database connection pg: for role app only, password not readable", func(t *testing.T) {
			got := v.read(t, "database/config/pg")
			if fmt.Sprint(got["allowed_roles"]) != "[app]" || got["plugin_name"] != "postgresql-database-plugin" {
				t.Errorf("database/config/pg = %v", got)
			}
			if strings.Contains(fmt.Sprint(got), "not-a-real-password") {
				t.Error("Vault returns the connection's password")
			}
		}},
		{"database role app: per-pod users dropped on revocation", func(t *testing.T) {
			got := v.read(t, "database/roles/app")
			want := map[string]string{
				"db_name":               "pg",
				"creation_statements":   `[CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";]`,
				"revocation_statements": `[REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{{name}}"; DROP ROLE IF EXISTS "{{name}}";]`,
				"default_ttl":           "3600",
				"max_ttl":               "86400",
			}
			for k, w := range want {
				if g := fmt.Sprint(got[k]); g != w {
					t.Errorf("%s = %s, want %s", k, g, w)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}

// TestVaultSetupParts runs setup.sh as an operator with one Vault for
// several clusters would: `secrets` once, then `cluster` per cluster, each
// with its own AUTH_MOUNT. Each part needs only its own settings and writes
// only its own side; bad input is a usage error (exit 2) that writes
// nothing. The end-to-end tests on the Kubernetes node log real pods in
// through such a mount.
func TestVaultSetupParts(t *testing.T) {
	t.Parallel()
	v := startVault(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pg-password")
	if err := os.WriteFile(pw, []byte("not-a-real-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	setup := func(t *testing.T, env ...string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		args := []string{filepath.Join(repoRoot(t), "manifests", "vault", "setup.sh")}
		if len(env) > 0 && !strings.Contains(env[0], "=") {
			args, env = append(args, env[0]), env[1:]
		}
		cmd := exec.CommandContext(ctx, "bash", args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "VAULT_BIN=" + v.bin, "VAULT_ADDR=" + v.addr, "VAULT_TOKEN=" + v.token}, env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	authMounts := func() string {
		var r map[string]any
		v.call(t, v.token, http.MethodGet, "sys/auth", nil, &r)
		var names []string
		for k := range r {
			if strings.HasSuffix(k, "/") && k != "token/" {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		return strings.Join(names, " ")
	}

	out, code := setup(t, "secrets", "PG_CONNECTION_URL=postgresql://{{username}}:{{password}}@127.0.0.1:5432/app?sslmode=disable",
		"PG_PASSWORD_FILE="+pw, "PG_VERIFY_CONNECTION=false")
	if code != 0 {
		t.Fatalf("setup.sh secrets: exit %d\n%s", code, out)
	}
	if m := authMounts(); m != "" {
		t.Errorf("setup.sh secrets enabled auth methods: %s", m)
	}
	if v.read(t, "database/roles/app")["db_name"] != "pg" {
		t.Errorf("setup.sh secrets wrote no database role app")
	}
	policy := v.read(t, "sys/policy/app")["rules"]

	for _, c := range []string{"kubernetes-eu", "kubernetes-us"} {
		out, code := setup(t, "cluster", "AUTH_MOUNT="+c, "WORKLOAD_NAMESPACE=shop-"+c,
			"KUBERNETES_HOST=https://"+c+".example:6443", "KUBERNETES_CA_CERT_FILE="+testCACert(t))
		if code != 0 {
			t.Fatalf("setup.sh cluster %s: exit %d\n%s", c, code, out)
		}
		if strings.Contains(out, "setup: database/") || strings.Contains(out, "setup: policy app") {
			t.Errorf("setup.sh cluster touched the secrets side:\n%s", out)
		}
	}
	if m := authMounts(); m != "kubernetes-eu/ kubernetes-us/" {
		t.Errorf("auth mounts %q, want kubernetes-eu/ kubernetes-us/", m)
	}
	for _, c := range []string{"kubernetes-eu", "kubernetes-us"} {
		if got := v.read(t, "auth/"+c+"/config")["kubernetes_host"]; got != "https://"+c+".example:6443" {
			t.Errorf("auth/%s/config kubernetes_host = %v", c, got)
		}
		if got := fmt.Sprint(v.read(t, "auth/"+c+"/role/app")["bound_service_account_namespaces"]); got != "[shop-"+c+"]" {
			t.Errorf("auth/%s/role/app namespaces = %s", c, got)
		}
	}
	if v.read(t, "sys/policy/app")["rules"] != policy {
		t.Errorf("setup.sh cluster changed policy app")
	}

	for _, bad := range [][]string{
		{"everything"},
		{"cluster", "AUTH_MOUNT=kubernetes prod"},
		{"cluster", "AUTH_MOUNT=-bad"},
	} {
		out, code := setup(t, bad...)
		if code != 2 || !strings.Contains(out, "setup.sh") {
			t.Errorf("setup.sh %v: exit %d, want 2 with a message\n%s", bad, code, out)
		}
	}
	if m := authMounts(); m != "kubernetes-eu/ kubernetes-us/" {
		t.Errorf("a refused run changed the auth mounts: %q", m)
	}
}
