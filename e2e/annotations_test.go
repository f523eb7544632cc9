package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/podlease/podlease/e2e/testbed"
)

// exampleAnnotations returns the pod template annotations of the
// Deployment in manifests/examples/NAME: what the kubelet writes into the
// component's downward API file.
func exampleAnnotations(t *testing.T, name string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "manifests", "examples", name, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s/deployment.yaml: %v", name, err)
	}
	if len(d.Spec.Template.Metadata.Annotations) == 0 {
		t.Fatalf("%s/deployment.yaml: no pod template annotations", name)
	}
	return d.Spec.Template.Metadata.Annotations
}

// writeAnnotations writes ann as the kubelet writes a downward API file of
// metadata.annotations: sorted key="value" lines, each value Go-quoted
// (%q), no newline after the last.
func writeAnnotations(t *testing.T, ann map[string]string) string {
	t.Helper()
	var lines []string
	for k, v := range ann {
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(lines)
	p := filepath.Join(t.TempDir(), "annotations")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// initFromAnnotations runs vault-init for p the way the podlease component
// does: --annotations and --jwt-file, VAULT_ADDR from the environment (the
// ConfigMap), everything else from the annotations. The pod's credentials
// are revoked when the test ends.
func (p *pod) initFromAnnotations(ann map[string]string) result {
	p.t.Helper()
	r := run(p.t, "vault-init", []string{
		"--annotations", writeAnnotations(p.t, ann),
		"--jwt-file", p.jwtFile,
		"--secrets-dir", p.secretsDir, "--state-dir", p.stateDir,
		"--timeout", "30s", "--log-level", "debug",
	}, p.env...)
	if r.code != 0 {
		p.t.Fatalf("vault-init exited %d:\n%s", r.code, r.stderr)
	}
	noteSecret(p.token())
	p.t.Cleanup(func() {
		if r := run(p.t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, p.env...); r.code != 0 {
			p.t.Errorf("vault-revoke exited %d:\n%s", r.code, r.stderr)
		}
	})
	return r
}

// login logs in to the bed's PostgreSQL as user and checks who it is.
func login(t *testing.T, user, password string) {
	t.Helper()
	ctx := context.Background()
	conn, err := bed.PGConnect(ctx, user, password)
	if err != nil {
		t.Fatalf("log in to PostgreSQL with the rendered credential: %v", err)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != user {
		t.Fatalf("SELECT current_user = %q, %v; want %q", who, err, user)
	}
}

// envCreds reads USERNAME and PASSWORD from an env-format secret file.
func envCreds(t *testing.T, content string) (user, password string) {
	t.Helper()
	return lineCreds(t, strings.TrimSpace(content), "=", "USERNAME", "PASSWORD", "the env file")
}

// urlCreds reads the user and password of a postgres:// URL file.
func urlCreds(t *testing.T, content string) (user, password string) {
	t.Helper()
	u, err := url.Parse(strings.TrimSpace(content))
	if err != nil || u.User == nil {
		t.Fatal("the file is not a postgres:// URL with a user")
	}
	password, _ = u.User.Password()
	if password == "" {
		t.Fatal("the URL has no password")
	}
	noteSecret(password)
	return u.User.Username(), password
}

// mapCreds reads username and password from Vault Agent's default "map"
// rendering (key: value lines).
func mapCreds(t *testing.T, content string) (user, password string) {
	t.Helper()
	return lineCreds(t, content, ": ", "username", "password", "the map rendering")
}

// lineCreds reads the values of userKey and passwordKey from lines of
// key, sep, value (a value's surrounding double quotes dropped) and notes
// the password as a secret; what names the file when one is missing.
func lineCreds(t *testing.T, content, sep, userKey, passwordKey, what string) (user, password string) {
	t.Helper()
	for _, line := range strings.Split(content, "\n") {
		k, v, _ := strings.Cut(line, sep)
		v = strings.Trim(v, `"`)
		switch k {
		case userKey:
			user = v
		case passwordKey:
			password = v
		}
	}
	if user == "" || password == "" {
		t.Fatalf("%s lacks %s or %s", what, userKey, passwordKey)
	}
	noteSecret(password)
	return user, password
}

// jsonCreds reads username and password from a JSON object.
func jsonCreds(t *testing.T, content string) (user, password string) {
	t.Helper()
	var c struct{ Username, Password string }
	if err := json.Unmarshal([]byte(content), &c); err != nil || c.Username == "" || c.Password == "" {
		t.Fatal("the JSON rendering lacks username or password")
	}
	noteSecret(c.Password)
	return c.Username, c.Password
}

// TestAnnotationsExample: the pod of manifests/examples/annotations,
// configured only by its podlease.io/* annotations, gets a credential that
// logs in to PostgreSQL.
func TestAnnotationsExample(t *testing.T) {
	t.Parallel()
	ann := exampleAnnotations(t, "annotations")
	p := newPod(t)
	r := p.initFromAnnotations(ann)
	user, password := envCreds(t, testbed.ReadFile(t, filepath.Join(p.secretsDir, "db")))
	login(t, user, password)
	for _, want := range []string{"name=role value=app from=podlease.io/role", `name="secret db" value=database/creds/app from=podlease.io/secret-db`, "from=podlease.io/format-db"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the debug log lacks %q", want)
		}
	}
}

// TestFromAgentInjectorExample: the pod of
// manifests/examples/from-agent-injector, annotated for the Vault Agent
// injector, gets the file Vault Agent renders for the same annotations,
// byte for byte but for the pod's own username and password, and it logs
// in to PostgreSQL.
func TestFromAgentInjectorExample(t *testing.T) {
	t.Parallel()
	ann := exampleAnnotations(t, "from-agent-injector")
	p := newPod(t)
	p.initFromAnnotations(ann)
	got := testbed.ReadFile(t, filepath.Join(p.secretsDir, "db-creds"))
	user, password := urlCreds(t, got)
	login(t, user, password)

	path := ann["vault.hashicorp.com/agent-inject-secret-db-creds"]
	want := agentRender(t, path, ann["vault.hashicorp.com/agent-inject-template-db-creds"])
	compareMasked(t, got, want, urlCreds)
}

// TestAgentDefaultTemplates: a secret annotated without a template is
// rendered as Vault Agent renders it with the injector's default
// templates, map and json, for a dynamic and a KV v2 secret.
func TestAgentDefaultTemplates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, path, def string
		creds           func(*testing.T, string) (string, string)
	}{
		{"map, database", "database/creds/app", "", mapCreds},
		{"json, database", "database/creds/app", "json", jsonCreds},
		{"map, kv v2", testbed.KVPath, "map", nil},
		{"json, kv v2", testbed.KVPath, "json", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ann := map[string]string{
				"vault.hashicorp.com/role":                  testbed.Role,
				"vault.hashicorp.com/agent-inject-secret-s": tc.path,
			}
			if tc.def != "" {
				ann["vault.hashicorp.com/agent-inject-default-template"] = tc.def
			}
			p := newPod(t)
			p.initFromAnnotations(ann)
			got := testbed.ReadFile(t, filepath.Join(p.secretsDir, "s"))
			tmpl := fmt.Sprintf("{{ with secret %q }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}", tc.path)
			if tc.def == "json" {
				tmpl = fmt.Sprintf("{{ with secret %q }}{{ .Data | toJSON }}\n{{ end }}", tc.path)
			}
			want := agentRender(t, tc.path, tmpl)
			if tc.creds != nil {
				user, password := tc.creds(t, got)
				login(t, user, password)
			}
			compareMasked(t, got, want, tc.creds)
		})
	}
}

// compareMasked fails t unless got is want but for the database username
// and password, each read by creds (nil: none, the bytes must be equal),
// vault-init's own in got and the Agent's in want (see matchMasked). It
// never prints the files.
func compareMasked(t *testing.T, got, want string, creds func(*testing.T, string) (string, string)) {
	t.Helper()
	if creds == nil {
		if got != want {
			t.Errorf("vault-init's file (%d bytes) differs from Vault Agent's (%d bytes)", len(got), len(want))
		}
		return
	}
	creds(t, got)
	user, password := creds(t, want)
	if err := matchMasked(want, got, user, password); err != nil {
		t.Errorf("vault-init's file: %v", err)
	}
}

// agentRender runs Vault Agent (the bed's vault binary) once, as the
// injector's init container runs it: kubernetes auto-auth as the bed's
// role, exit_after_auth, and one template with the given contents, the
// secret declared at path. It returns the rendered file and revokes the
// agent's token (and with it its lease) when the test ends.
func agentRender(t *testing.T, path, contents string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sa"), 0o755); err != nil {
		t.Fatal(err)
	}
	sink := filepath.Join(dir, "token")
	dest := filepath.Join(dir, "secrets", "out")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := testbed.RunAgent(ctx, dir, testbed.AgentConfig{
		VaultAddr: bed.VaultAddr, Role: testbed.Role,
		JWTFile:  bed.WriteJWT(filepath.Join(dir, "sa"), testbed.Namespace, testbed.ServiceAccount),
		SinkFile: sink, PIDFile: filepath.Join(dir, "pid"), ExitAfterAuth: true,
		Templates: []testbed.AgentTemplate{{Contents: contents, Destination: dest}},
	})
	if tok, rerr := os.ReadFile(sink); rerr == nil {
		token := strings.TrimSpace(string(tok))
		noteSecret(token)
		t.Cleanup(func() { _ = bed.Client(token).Auth().Token().RevokeSelf("") })
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return testbed.ReadFile(t, dest)
}

// TestAnnotationsRefused: an injector annotation that cannot mean the same
// here stops the real binary with exit 2 naming it, before it logs in:
// nothing is written.
func TestAnnotationsRefused(t *testing.T) {
	t.Parallel()
	ann := exampleAnnotations(t, "from-agent-injector")
	ann["vault.hashicorp.com/agent-inject-command-db-creds"] = "kill -HUP 1"
	p := newPod(t)
	r := run(t, "vault-init", []string{
		"--annotations", writeAnnotations(t, ann), "--jwt-file", p.jwtFile,
		"--secrets-dir", p.secretsDir, "--state-dir", p.stateDir, "--timeout", "30s",
	}, p.env...)
	if r.code != 2 || !strings.Contains(r.stderr, "vault.hashicorp.com/agent-inject-command-db-creds") {
		t.Fatalf("exit %d, want 2 naming the annotation:\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "logged in") {
		t.Error("vault-init logged in before refusing its configuration")
	}
	for _, dir := range []string{p.secretsDir, p.stateDir} {
		if e := dirEntries(t, dir); len(e) != 0 {
			t.Errorf("%s holds %q after a refused start", dir, e)
		}
	}
}
