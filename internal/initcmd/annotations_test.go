package initcmd

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podlease/podlease/internal/cli"
)

// annotationsFile writes ann as the kubelet writes a downward API
// metadata.annotations file and returns its path.
func annotationsFile(t *testing.T, ann map[string]string) string {
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

// configure parses args and env as vault-init does, with --annotations
// pointing at ann, and validates.
func configure(t *testing.T, ann map[string]string, args []string, env map[string]string) (*Config, []*Spec, error) {
	t.Helper()
	var c Config
	fs := cli.NewFlagSet(name, summary, io.Discard)
	c.register(fs)
	args = append([]string{"--annotations=" + annotationsFile(t, ann)}, args...)
	getenv := func(k string) string { return env[k] }
	if err := cli.Parse(fs, args, getenv); err != nil {
		return nil, nil, err
	}
	specs, err := c.Validate(getenv)
	return &c, specs, err
}

func specByName(specs []*Spec, name string) *Spec {
	for _, s := range specs {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func originOf(c *Config, setting string) string {
	for _, o := range c.Origins {
		if o.Setting == setting && !o.Overridden {
			return o.From
		}
	}
	return ""
}

var addr = map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200"}

func TestAnnotationsOwn(t *testing.T) {
	t.Parallel()
	tmplText := "{{ with secret \"database/creds/app\" }}\nuser={{ .Data.username }}\n{{ end }}\n"
	c, specs, err := configure(t, map[string]string{
		"podlease.io/role":               "app",
		"podlease.io/auth-mount":         "k8s",
		"podlease.io/jwt-file":           "/var/run/secrets/vault/token",
		"podlease.io/timeout":            "30s",
		"podlease.io/file-mode":          "0400",
		"podlease.io/secret-db":          "database/creds/app",
		"podlease.io/template-db":        tmplText,
		"podlease.io/secret-cfg":         "secret/data/app",
		"podlease.io/format-cfg":         "yaml",
		"podlease.io/inject":             "true",
		"kubectl.kubernetes.io/whatever": "ignored",
	}, nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.Role != "app" || c.Auth.Mount != "k8s" || c.Auth.JWTFile != "/var/run/secrets/vault/token" || c.Timeout.String() != "30s" {
		t.Errorf("auth %+v timeout %s", c.Auth, c.Timeout)
	}
	db, cfg := specByName(specs, "db"), specByName(specs, "cfg")
	if db == nil || cfg == nil || len(specs) != 2 {
		t.Fatalf("specs %+v", specs)
	}
	if db.Path != "database/creds/app" || db.Text != tmplText || db.Template == nil || db.FileMode != "0400" {
		t.Errorf("db = %+v", db)
	}
	if cfg.Format != "yaml" || cfg.Template != nil {
		t.Errorf("cfg = %+v", cfg)
	}
	for setting, want := range map[string]string{
		"role": "podlease.io/role", "vault-addr": "VAULT_ADDR", "secret db": "podlease.io/secret-db",
		"rendering db": "podlease.io/template-db", "state-dir": "default",
	} {
		if got := originOf(c, setting); got != want {
			t.Errorf("origin of %s = %q, want %q", setting, got, want)
		}
	}
}

func TestAnnotationsAgentInjector(t *testing.T) {
	t.Parallel()
	tmplText := "{{- with secret \"database/creds/db-app\" -}}\npostgres://{{ .Data.username }}:{{ .Data.password }}@postgres:5432/appdb?sslmode=disable\n{{- end }}"
	c, specs, err := configure(t, map[string]string{
		"vault.hashicorp.com/agent-inject":                              "true",
		"vault.hashicorp.com/role":                                      "internal-app",
		"vault.hashicorp.com/auth-path":                                 "auth/k8s-prod",
		"vault.hashicorp.com/auth-type":                                 "kubernetes",
		"vault.hashicorp.com/namespace":                                 "team-a",
		"vault.hashicorp.com/service":                                   "https://vault.example:8200",
		"vault.hashicorp.com/agent-inject-secret-DB-Creds":              "database/creds/db-app",
		"vault.hashicorp.com/agent-inject-template-DB-Creds":            tmplText,
		"vault.hashicorp.com/agent-inject-file-DB-Creds":                "db.url",
		"vault.hashicorp.com/agent-inject-perms-DB-Creds":               "0400",
		"vault.hashicorp.com/agent-inject-secret-config":                "/secret/data/web/",
		"vault.hashicorp.com/agent-inject-secret-raw":                   "secret/data/raw",
		"vault.hashicorp.com/preserve-secret-case-raw":                  "true",
		"vault.hashicorp.com/agent-limits-cpu":                          "250m",
		"vault.hashicorp.com/agent-telemetry-prometheus_retention_time": "30s",
		"vault.hashicorp.com/error-on-missing-key-config":               "true",
		"vault.hashicorp.com/secret-volume-path":                        "/vault/secrets",
		"vault.hashicorp.com/agent-pre-populate-only":                   "",
	}, nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.Role != "internal-app" || c.Auth.Mount != "k8s-prod" || c.Auth.Method != "kubernetes" || c.Namespace != "team-a" || c.VaultAddr != "https://vault.example:8200" {
		t.Errorf("config %+v", c)
	}
	db := specByName(specs, "db.url")
	if db == nil || db.Text != tmplText || db.FileMode != "0400" || originOf(c, "file db-creds") != "vault.hashicorp.com/agent-inject-file-DB-Creds" {
		t.Fatalf("db.url = %+v (DB-Creds, lower-cased as the injector does, written as its agent-inject-file)", db)
	}
	cfg := specByName(specs, "config")
	wantDefault := "{{ with secret \"secret/data/web\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}"
	if cfg == nil || cfg.Text != wantDefault || cfg.FileMode != "0440" {
		t.Fatalf("config = %+v, want Vault Agent's default map template", cfg)
	}
	if specByName(specs, "raw") == nil {
		t.Errorf("preserve-secret-case: no secret named raw")
	}
	var warned []string
	for _, w := range c.Warnings {
		warned = append(warned, w.Annotation)
	}
	want := []string{"vault.hashicorp.com/agent-inject", "vault.hashicorp.com/agent-limits-cpu", "vault.hashicorp.com/agent-telemetry-prometheus_retention_time"}
	if !slices.Equal(warned, want) {
		t.Errorf("warnings for %q, want %q (one each; empty values count as unset)", warned, want)
	}
	if got := originOf(c, "vault-addr"); got != "vault.hashicorp.com/service" {
		t.Errorf("vault-addr from %q: an annotation beats VAULT_ADDR", got)
	}
}

func TestAnnotationsDefaultJSONTemplate(t *testing.T) {
	t.Parallel()
	_, specs, err := configure(t, map[string]string{
		"vault.hashicorp.com/role":                          "app",
		"vault.hashicorp.com/agent-inject-default-template": "json",
		"vault.hashicorp.com/agent-inject-secret-db":        "database/creds/app",
	}, nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{{ with secret \"database/creds/app\" }}{{ .Data | toJSON }}\n{{ end }}"; specs[0].Text != want {
		t.Fatalf("template %q, want %q", specs[0].Text, want)
	}
}

// TestAnnotationsSecretPathReplaced: a --secret that gives an annotated
// secret another path renders Vault Agent's default template from the new
// path; a template the user wrote for the annotation's path is refused,
// naming the annotation and the flag, rather than rewritten.
func TestAnnotationsSecretPathReplaced(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		ann      map[string]string
		env      map[string]string
		wantText string
		wantErr  []string
	}{
		{
			name:     "agent default template",
			ann:      map[string]string{"vault.hashicorp.com/agent-inject-secret-db": "database/creds/old"},
			wantText: "{{ with secret \"database/creds/new\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}",
		},
		{
			name:     "agent default json template, path from PODLEASE_SECRET",
			ann:      map[string]string{"vault.hashicorp.com/agent-inject-secret-db": "database/creds/old", "vault.hashicorp.com/agent-inject-default-template": "json"},
			env:      map[string]string{"PODLEASE_SECRET": "db=database/creds/new"},
			wantText: "{{ with secret \"database/creds/new\" }}{{ .Data | toJSON }}\n{{ end }}",
		},
		{
			name:     "template that does not name the path",
			ann:      map[string]string{"vault.hashicorp.com/agent-inject-secret-db": "database/creds/old", "vault.hashicorp.com/agent-inject-template-db": "{{ .Data.username }}"},
			wantText: "{{ .Data.username }}",
		},
		{
			name: "template written for the old path",
			ann: map[string]string{
				"vault.hashicorp.com/agent-inject-secret-db":   "database/creds/old",
				"vault.hashicorp.com/agent-inject-template-db": `{{ with secret "database/creds/old" }}{{ .Data.username }}{{ end }}`,
			},
			wantErr: []string{"annotation vault.hashicorp.com/agent-inject-template-db reads database/creds/old", "--secret gave secret \"db\" the path database/creds/new"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ann := map[string]string{"vault.hashicorp.com/role": "web"}
			maps.Copy(ann, tc.ann)
			env := map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200"}
			maps.Copy(env, tc.env)
			var args []string
			if tc.env["PODLEASE_SECRET"] == "" {
				args = []string{"--secret", "db=database/creds/new"}
			}
			_, specs, err := configure(t, ann, args, env)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; specs %+v", specs)
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			db := specByName(specs, "db")
			if db == nil || db.Path != "database/creds/new" || db.Text != tc.wantText {
				t.Fatalf("db = %+v, want path database/creds/new rendered with %q", db, tc.wantText)
			}
		})
	}
}

func TestAnnotationsPrecedence(t *testing.T) {
	t.Parallel()
	ann := map[string]string{
		"vault.hashicorp.com/role":                     "from-annotation",
		"podlease.io/timeout":                          "45s",
		"vault.hashicorp.com/agent-inject-secret-db":   "database/creds/ann",
		"vault.hashicorp.com/agent-inject-template-db": "{{ .Data.username }}",
		"podlease.io/secret-cache":                     "secret/data/cache",
		"podlease.io/format-cache":                     "env",
	}
	// A template of the cache secret alone: one that reads another path
	// needs that path as a --secret too.
	tm := filepath.Join(t.TempDir(), "cache.tmpl")
	if err := os.WriteFile(tm, []byte(`{{ .Data.data | toJSON }}`), 0o600); err != nil {
		t.Fatal(err)
	}

	c, specs, err := configure(t, ann, []string{"--role=from-flag", "--secret=db=database/creds/flag", "--template=cache=" + tm},
		map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200", "PODLEASE_ROLE": "from-env", "PODLEASE_TIMEOUT": "1m"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.Role != "from-flag" || c.Timeout.String() != "1m0s" {
		t.Errorf("role %q timeout %s: want the flag's role and the environment's timeout", c.Auth.Role, c.Timeout)
	}
	if got := originOf(c, "role"); got != "--role" {
		t.Errorf("role from %q", got)
	}
	if got := originOf(c, "timeout"); got != "PODLEASE_TIMEOUT" {
		t.Errorf("timeout from %q", got)
	}
	db, cache := specByName(specs, "db"), specByName(specs, "cache")
	if db.Path != "database/creds/flag" {
		t.Errorf("db path %q: the flag's secret wins", db.Path)
	}
	if db.Text != "{{ .Data.username }}" {
		t.Errorf("db template %q: the annotation's template applies to the flag's secret of the same name", db.Text)
	}
	if cache.TemplateFile != tm {
		t.Errorf("cache %+v: the flag's template wins over the annotation's format", cache)
	}
	var over []string
	for _, o := range c.Origins {
		if o.Overridden {
			over = append(over, o.Setting+" by "+o.From)
		}
	}
	slices.Sort(over)
	want := []string{"podlease.io/format-cache by --template", "podlease.io/timeout by PODLEASE_TIMEOUT", "vault.hashicorp.com/agent-inject-secret-db by --secret", "vault.hashicorp.com/role by --role"}
	if !slices.Equal(over, want) {
		t.Errorf("overridden %q, want %q", over, want)
	}

	// Without the flag the environment wins; without both, the annotation.
	c, _, err = configure(t, ann, nil, map[string]string{"VAULT_ADDR": "http://x:1", "PODLEASE_ROLE": "from-env"})
	if err != nil || c.Auth.Role != "from-env" {
		t.Fatalf("role %q, %v: want the environment's", c.Auth.Role, err)
	}
	c, _, err = configure(t, ann, nil, addr)
	if err != nil || c.Auth.Role != "from-annotation" || c.Timeout.String() != "45s" {
		t.Fatalf("role %q timeout %s, %v: want the annotations'", c.Auth.Role, c.Timeout, err)
	}
}

func TestAnnotationsTLSAgreement(t *testing.T) {
	t.Parallel()
	ann := map[string]string{
		"vault.hashicorp.com/role":                   "app",
		"vault.hashicorp.com/agent-inject-secret-db": "database/creds/app",
		"vault.hashicorp.com/ca-cert":                "/vault/tls/ca.crt",
		"vault.hashicorp.com/tls-skip-verify":        "false",
	}
	if _, _, err := configure(t, ann, nil, map[string]string{"VAULT_ADDR": "https://v:8200", "VAULT_CACERT": "/vault/tls/ca.crt"}); err != nil {
		t.Fatalf("agreeing with VAULT_CACERT: %v", err)
	}
	_, _, err := configure(t, ann, nil, map[string]string{"VAULT_ADDR": "https://v:8200"})
	if err == nil || !strings.Contains(err.Error(), "vault.hashicorp.com/ca-cert") || !strings.Contains(err.Error(), "set VAULT_CACERT=/vault/tls/ca.crt in the podlease ConfigMap") {
		t.Fatalf("err = %v", err)
	}
}

func TestAnnotationsRefused(t *testing.T) {
	t.Parallel()
	base := map[string]string{"vault.hashicorp.com/role": "app", "vault.hashicorp.com/agent-inject-secret-db": "database/creds/app"}
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"unknown own key", map[string]string{"podlease.io/rol": "app"}, "annotation podlease.io/rol: unknown"},
		{"own log level is not an annotation", map[string]string{"podlease.io/log-level": "debug"}, "podlease.io/log-level: unknown"},
		{"unknown injector key", map[string]string{"vault.hashicorp.com/agent-frobnicate": "1"}, "annotation vault.hashicorp.com/agent-frobnicate is not one podlease knows"},
		{"command", map[string]string{"vault.hashicorp.com/agent-inject-command-db": "kill -HUP 1"}, "vault.hashicorp.com/agent-inject-command-db is not supported: to tell the app"},
		{"token", map[string]string{"vault.hashicorp.com/agent-inject-token": "true"}, "agent-inject-token is not supported"},
		{"configmap", map[string]string{"vault.hashicorp.com/agent-configmap": "cm"}, "agent-configmap is not supported"},
		{"delims", map[string]string{"vault.hashicorp.com/agent-template-left-delim-db": "[["}, "agent-template-left-delim-db is not supported"},
		{"auth config", map[string]string{"vault.hashicorp.com/auth-config-token-path": "/t"}, "auth-config-token-path is not supported"},
		{"auth type", map[string]string{"vault.hashicorp.com/auth-type": "aws"}, `auth type "aws" is not supported`},
		{"conflict between prefixes", map[string]string{"podlease.io/role": "other"}, "annotations podlease.io/role and vault.hashicorp.com/role disagree"},
		{"conflicting secret", map[string]string{"podlease.io/secret-db": "database/creds/other"}, "annotations podlease.io/secret-db and vault.hashicorp.com/agent-inject-secret-db disagree"},
		{"template without a path", map[string]string{"vault.hashicorp.com/agent-inject-template-x": "{{ . }}"}, `annotation vault.hashicorp.com/agent-inject-template-x: no Vault path for secret "x"`},
		{"format and template", map[string]string{"podlease.io/format-db": "env", "podlease.io/template-db": "x"}, "give a format or a template, not both"},
		{"bad format", map[string]string{"podlease.io/format-db": "toml"}, `annotation podlease.io/format-db: format "toml"`},
		{"bad template", map[string]string{"vault.hashicorp.com/agent-inject-template-db": "{{ .Data.x"}, "annotation vault.hashicorp.com/agent-inject-template-db:"},
		{"bad perms", map[string]string{"vault.hashicorp.com/agent-inject-perms-db": "rw"}, "annotation vault.hashicorp.com/agent-inject-perms-db: file mode"},
		{"file in a subdirectory", map[string]string{"vault.hashicorp.com/agent-inject-file-db": "sub/db"}, "annotation vault.hashicorp.com/agent-inject-file-db"},
		{"file escaping", map[string]string{"vault.hashicorp.com/agent-inject-file-db": "../state/token"}, "without '/'"},
		{"two secrets one file", map[string]string{"podlease.io/secret-x": "secret/data/x", "vault.hashicorp.com/agent-inject-file-db": "x"}, `secrets "x" and "db" would both write /vault/secrets/x`},
		{"other volume path", map[string]string{"vault.hashicorp.com/secret-volume-path": "/etc/secrets"}, "annotation vault.hashicorp.com/secret-volume-path \"/etc/secrets\""},
		{"bad bool", map[string]string{"vault.hashicorp.com/preserve-secret-case": "yes please"}, "preserve-secret-case"},
		{"bad timeout", map[string]string{"podlease.io/timeout": "soon"}, "annotation podlease.io/timeout:"},
		{"bad secret name", map[string]string{"podlease.io/secret-.hidden": "a/b"}, `secret name ".hidden"`},
		{"token path", map[string]string{"vault.hashicorp.com/agent-inject-secret-tok": "auth/token/lookup-self"}, "annotation vault.hashicorp.com/agent-inject-secret-tok: Vault answers auth/token/lookup-self with a Vault token"},
		{"state inside the secrets", map[string]string{"podlease.io/state-dir": "/vault/secrets/state"}, "one is inside the other"},
		{"secrets inside the state", map[string]string{"podlease.io/secrets-dir": "/vault/state/s", "vault.hashicorp.com/secret-volume-path": "/vault/state/s"}, "one is inside the other"},
		{"bad default template", map[string]string{"vault.hashicorp.com/agent-inject-default-template": "yaml"}, "agent-inject-default-template"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ann := map[string]string{}
			for k, v := range base {
				ann[k] = v
			}
			for k, v := range tc.ann {
				ann[k] = v
			}
			_, _, err := configure(t, ann, nil, addr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestRunAnnotationUsageError: a refused annotation is a usage error (exit
// 2) naming it, and nothing is written.
func TestRunAnnotationUsageError(t *testing.T) {
	t.Parallel()
	d := newDirs(t)
	file := annotationsFile(t, map[string]string{
		"vault.hashicorp.com/role":                    "app",
		"vault.hashicorp.com/agent-inject-secret-db":  "database/creds/app",
		"vault.hashicorp.com/agent-inject-command-db": "pkill -HUP app",
	})
	r := runInit(t, append(d.flags(), "--annotations="+file), map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"})
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "vault.hashicorp.com/agent-inject-command-db") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if got := files(t, d.secrets); len(got) != 0 {
		t.Fatalf("wrote %v", got)
	}
	r = runInit(t, append(d.flags(), "--annotations="+filepath.Join(t.TempDir(), "missing")), map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"})
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "--annotations:") {
		t.Fatalf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestRunFromAnnotations: vault-init configured by the injector's
// annotations alone writes Vault Agent's default rendering under the
// annotated file name and mode, logs where each setting came from at
// debug level, and warns once per ignored annotation.
func TestRunFromAnnotations(t *testing.T) {
	t.Parallel()
	f := &fakeVault{}
	vaultAddr := f.start(t)
	d := newDirs(t)
	file := annotationsFile(t, map[string]string{
		"vault.hashicorp.com/role":                      "web",
		"vault.hashicorp.com/service":                   vaultAddr,
		"vault.hashicorp.com/agent-inject-secret-db":    "database/creds/app",
		"vault.hashicorp.com/agent-inject-file-db":      "db.yaml",
		"vault.hashicorp.com/agent-inject-perms-db":     "0400",
		"vault.hashicorp.com/agent-inject-secret-app":   "secret/data/app",
		"vault.hashicorp.com/agent-inject-template-app": "{{ with secret \"secret/data/app\" }}\nAPI_KEY={{ .Data.data.api_key }}\n{{ end }}",
		"vault.hashicorp.com/agent-requests-mem":        "64Mi",
	})
	r := runInit(t, append(d.flags(), "--jwt-file", jwtFile, "--annotations", file, "--log-level", "debug"), map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"})
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := files(t, d.secrets); !slices.Equal(got, []string{"app", "db.yaml"}) {
		t.Fatalf("files %q", got)
	}
	if got, want := readFile(t, filepath.Join(d.secrets, "db.yaml")), "password: "+fakePassword+"\nusername: v-kubernetes-web-x1\n"; got != want {
		t.Errorf("db.yaml: Vault Agent's default template renders key: value lines")
	}
	assertMode(t, filepath.Join(d.secrets, "db.yaml"), 0o400)
	assertMode(t, filepath.Join(d.secrets, "app"), 0o440)
	if got, want := readFile(t, filepath.Join(d.secrets, "app")), "\nAPI_KEY="+fakeAPIKey+"\n"; got != want {
		t.Errorf("app: the inline multi-line template is not rendered as written")
	}
	for _, want := range []string{
		`msg=setting name=role value=web from=vault.hashicorp.com/role`,
		`msg=setting name=vault-addr value=` + vaultAddr + ` from=vault.hashicorp.com/service`,
		`msg=setting name=jwt-file value=testdata/sa-token from=--jwt-file`,
		`msg=setting name=state-dir`,
		`msg=setting name="secret db" value=database/creds/app from=vault.hashicorp.com/agent-inject-secret-db`,
		`msg="ignoring annotation" annotation=vault.hashicorp.com/agent-requests-mem`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, r.stderr)
		}
	}
	if n := strings.Count(r.stderr, "agent-requests-mem"); n != 1 {
		t.Errorf("the ignored annotation is named %d times, want one warning", n)
	}
}
