package initcmd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/login"
	"github.com/podlease/podlease/internal/state"
)

// validConfig is what vault-init would parse from a minimal, correct
// command line with VAULT_ADDR set.
func validConfig() Config {
	return Config{
		Auth:       state.Auth{Method: login.Kubernetes, Role: "web", JWTFile: login.DefaultJWTFile},
		Secrets:    []string{"db=database/creds/app"},
		SecretsDir: "/vault/secrets",
		StateDir:   "/vault/state",
		FileMode:   "0440",
		Timeout:    2 * time.Minute,
	}
}

func vaultEnv(kv ...string) func(string) string {
	m := map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var tmpl = filepath.Join("testdata", "app.tmpl")

func TestValidateErrors(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		name   string
		edit   func(c *Config)
		getenv func(string) string
		want   string // the error starts with this: the flag and the value
		also   string // and contains this
	}{
		{name: "vault addr without scheme", edit: func(c *Config) { c.VaultAddr = "vault:8200" }, want: `--vault-addr "vault:8200": want a URL with http:// or https://`},
		{name: "vault addr host only", edit: func(c *Config) { c.VaultAddr = "vault.vault.svc" }, want: `--vault-addr "vault.vault.svc": want a URL`},
		{name: "vault addr other scheme", edit: func(c *Config) { c.VaultAddr = "tcp://vault:8200" }, want: `--vault-addr "tcp://vault:8200": want a URL`},
		{name: "VAULT_ADDR without scheme", getenv: vaultEnv("VAULT_ADDR", "vault:8200"), want: `VAULT_ADDR "vault:8200": want a URL`},
		{name: "secret without =", edit: func(c *Config) { c.Secrets = []string{"db"} }, want: `--secret "db": want NAME=PATH`},
		{name: "secret with empty path", edit: func(c *Config) { c.Secrets = []string{"db="} }, want: `--secret "db=": want NAME=PATH`},
		{name: "secret with only slashes", edit: func(c *Config) { c.Secrets = []string{"db=//"} }, want: `--secret "db=//": want NAME=PATH`},
		{name: "secret with blank path", edit: func(c *Config) { c.Secrets = []string{"db=  "} }, want: `--secret "db=  ": want NAME=PATH`},
		{name: "empty secret", edit: func(c *Config) { c.Secrets = []string{""} }, want: `--secret "": want NAME=PATH`},
		{name: "empty name", edit: func(c *Config) { c.Secrets = []string{"=database/creds/app"} }, want: `--secret "=database/creds/app": name "" must be`},
		{name: "parent dir name", edit: func(c *Config) { c.Secrets = []string{"../x=database/creds/app"} }, want: `--secret "../x=database/creds/app": name "../x"`, also: "it is the file name"},
		{name: "dot name", edit: func(c *Config) { c.Secrets = []string{".=a/b"} }, want: `--secret ".=a/b": name "."`},
		{name: "dot-dot name", edit: func(c *Config) { c.Secrets = []string{"..=a/b"} }, want: `--secret "..=a/b": name ".."`},
		{name: "hidden name", edit: func(c *Config) { c.Secrets = []string{".token=a/b"} }, want: `--secret ".token=a/b": name ".token"`},
		{name: "name with slash", edit: func(c *Config) { c.Secrets = []string{"a/b=a/b"} }, want: `--secret "a/b=a/b": name "a/b"`},
		{name: "absolute name", edit: func(c *Config) { c.Secrets = []string{"/etc/passwd=a/b"} }, want: `--secret "/etc/passwd=a/b": name "/etc/passwd"`},
		{name: "name with space", edit: func(c *Config) { c.Secrets = []string{"my db=a/b"} }, want: `--secret "my db=a/b": name "my db"`},
		{name: "200-char name", edit: func(c *Config) { c.Secrets = []string{long + "=a/b"} }, want: `--secret "` + long + `=a/b": name "` + long + `" must be 1-128`},
		{name: "129-char name", edit: func(c *Config) { c.Secrets = []string{long[:129] + "=a/b"} }, want: `--secret "` + long[:129] + `=a/b"`},
		{name: "unicode name", edit: func(c *Config) { c.Secrets = []string{"dé=a/b"} }, want: `--secret "dé=a/b": name "dé"`},
		{name: "newline in name", edit: func(c *Config) { c.Secrets = []string{"d\nb=a/b"} }, want: `--secret "d\nb=a/b"`},
		{name: "duplicate name", edit: func(c *Config) { c.Secrets = []string{"db=database/creds/app", "db=database/creds/other"} }, want: `--secret "db=database/creds/other": name "db" is given twice`},
		{name: "no secret", edit: func(c *Config) { c.Secrets = nil }, want: "--secret NAME=PATH is required"},
		{name: "format without =", edit: func(c *Config) { c.Formats = []string{"env"} }, want: `--format "env": want NAME=json|env|yaml`},
		{name: "format for unknown secret", edit: func(c *Config) { c.Formats = []string{"other=env"} }, want: `--format "other=env": no --secret is named "other"`},
		{name: "format twice", edit: func(c *Config) { c.Formats = []string{"db=env", "db=yaml"} }, want: `--format "db=yaml": secret "db" already has a --format`},
		{name: "bad format", edit: func(c *Config) { c.Formats = []string{"db=toml"} }, want: `--format "db=toml": format "toml" is not json, env or yaml`},
		{name: "format is case-sensitive", edit: func(c *Config) { c.Formats = []string{"db=JSON"} }, want: `--format "db=JSON"`},
		{name: "empty format", edit: func(c *Config) { c.Formats = []string{"db="} }, want: `--format "db=": format ""`},
		{name: "template without =", edit: func(c *Config) { c.Templates = []string{tmpl} }, want: `--template "` + tmpl + `": want NAME=FILE`},
		{name: "template without file", edit: func(c *Config) { c.Templates = []string{"db="} }, want: `--template "db=": want NAME=FILE`},
		{name: "template for unknown secret", edit: func(c *Config) { c.Templates = []string{"other=" + tmpl} }, want: `--template "other=` + tmpl + `": no --secret is named "other"`},
		{name: "template file missing", edit: func(c *Config) { c.Templates = []string{"db=testdata/nope.tmpl"} }, want: `--template "db=testdata/nope.tmpl": `, also: "no such file or directory"},
		{name: "template twice", edit: func(c *Config) { c.Templates = []string{"db=" + tmpl, "db=" + tmpl} }, want: `--template "db=` + tmpl + `": secret "db" already has a template`},
		{name: "template does not parse", edit: func(c *Config) { c.Templates = []string{"db=testdata/broken.tmpl"} }, want: `--template "db=testdata/broken.tmpl": `, also: "testdata/broken.tmpl:2: unclosed action started at line 1"},
		{name: "no role", edit: func(c *Config) { c.Auth.Role = "" }, want: "--role is required with --auth-method kubernetes"},
		{name: "bad auth method", edit: func(c *Config) { c.Auth.Method = "oidc" }, want: `--auth-method "oidc"`},
		{name: "file mode not octal", edit: func(c *Config) { c.FileMode = "rw-r-----" }, want: `--file-mode: file mode "rw-r-----": want octal`},
		{name: "file mode with 9", edit: func(c *Config) { c.FileMode = "0990" }, want: `--file-mode: file mode "0990"`},
		{name: "file mode with setuid", edit: func(c *Config) { c.FileMode = "4755" }, want: `--file-mode: file mode "4755"`},
		{name: "empty file mode", edit: func(c *Config) { c.FileMode = "" }, want: `--file-mode: file mode ""`},
		{name: "same dirs", edit: func(c *Config) { c.StateDir = "/vault/secrets/" }, want: "--secrets-dir and --state-dir are both /vault/secrets/", also: "the app never mounts"},
		{name: "same dirs spelled differently", edit: func(c *Config) { c.SecretsDir = "/vault/./x"; c.StateDir = "/vault/y/../x" }, want: "--secrets-dir and --state-dir are both"},
		{name: "empty secrets dir", edit: func(c *Config) { c.SecretsDir = "" }, want: "--secrets-dir and --state-dir must not be empty"},
		{name: "no vault address", getenv: func(string) string { return "" }, want: "--vault-addr (or VAULT_ADDR) is required"},
		{name: "zero timeout", edit: func(c *Config) { c.Timeout = 0 }, want: "--timeout 0s: want a positive duration"},
		{name: "negative timeout", edit: func(c *Config) { c.Timeout = -time.Second }, want: "--timeout -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			if tc.edit != nil {
				tc.edit(&c)
			}
			getenv := tc.getenv
			if getenv == nil {
				getenv = vaultEnv()
			}
			specs, err := c.Validate(getenv)
			if err == nil {
				t.Fatalf("no error; specs %+v", specs)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n  %q\nwant it to start with\n  %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.also) {
				t.Errorf("error %q does not contain %q", err, tc.also)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Secrets = []string{"db=/database/creds/app/", "app=secret/data/app", "cfg.v2=kv/cfg", "A-1_b.c=x/y", strings.Repeat("n", 128) + "=x/z"}
	c.Formats = []string{"db=env", "cfg.v2=json"}
	c.Templates = []string{"app=" + tmpl}
	specs, err := c.Validate(vaultEnv("VAULT_NAMESPACE", "team-a"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Spec{}
	for _, s := range specs {
		got[s.Name] = *s
	}
	if len(specs) != 5 {
		t.Fatalf("%d specs, want 5", len(specs))
	}
	if s := got["db"]; s.Path != "database/creds/app" || s.Format != "env" || s.Template != nil {
		t.Errorf("db = %+v, want the path without slashes, env, no template", s)
	}
	if s := got["cfg.v2"]; s.Format != "json" {
		t.Errorf("cfg.v2 format %q, want json", s.Format)
	}
	if s := got["app"]; s.Template == nil || s.TemplateFile != tmpl || !strings.Contains(s.Text, "DATABASE_URL") || s.Format != "json" {
		t.Errorf("app = %+v, want the template from %s", s, tmpl)
	}
	if s := got["A-1_b.c"]; s.Path != "x/y" || s.Format != "json" {
		t.Errorf("A-1_b.c = %+v, want json by default", s)
	}
	if specs[0].Name != "db" || specs[4].Name != strings.Repeat("n", 128) {
		t.Error("specs are not in command-line order")
	}
	if c.VaultAddr != "http://127.0.0.1:8200" || c.Namespace != "team-a" {
		t.Errorf("vault addr %q namespace %q, want them from VAULT_ADDR and VAULT_NAMESPACE", c.VaultAddr, c.Namespace)
	}
	if c.Auth.Mount != "kubernetes" {
		t.Errorf("auth mount %q, want the method's name", c.Auth.Mount)
	}
}

func TestValidateFlagBeatsVaultEnv(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.VaultAddr = "https://vault.example.com:8200"
	c.Namespace = "ns-flag"
	if _, err := c.Validate(vaultEnv("VAULT_NAMESPACE", "ns-env")); err != nil {
		t.Fatal(err)
	}
	if c.VaultAddr != "https://vault.example.com:8200" || c.Namespace != "ns-flag" {
		t.Errorf("vault addr %q namespace %q, want the flags'", c.VaultAddr, c.Namespace)
	}
}

// TestValidateStateSize: state.json keeps each template's text, and
// vault-renew and vault-revoke read at most state.MaxFile: templates that
// would not fit (twice, for a swap under way) are refused before login;
// a large one that fits, of characters JSON could escape, is taken.
func TestValidateStateSize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := strings.Repeat("<&>", (1<<20-100)/3) // just under the 1 MiB a template may be
	var templates, secrets []string
	for i := range 3 {
		f := filepath.Join(dir, fmt.Sprintf("t%d.tmpl", i))
		if err := os.WriteFile(f, []byte(big), 0o644); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, fmt.Sprintf("s%d=secret/data/s%d", i, i))
		templates = append(templates, fmt.Sprintf("s%d=%s", i, f))
	}
	c := validConfig()
	c.Secrets, c.Templates = secrets[:1], templates[:1]
	if _, err := c.Validate(vaultEnv()); err != nil {
		t.Errorf("one template of 1 MiB: %v", err)
	}
	c = validConfig()
	c.Secrets, c.Templates = secrets, templates
	if _, err := c.Validate(vaultEnv()); err == nil || !strings.HasPrefix(err.Error(), "--template: the templates take") {
		t.Errorf("three templates of 1 MiB: %v; want them refused", err)
	}
}
