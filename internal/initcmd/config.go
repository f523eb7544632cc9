package initcmd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/podlease/podlease/internal/login"
	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/state"
)

// Config is vault-init's parsed command line.
type Config struct {
	VaultAddr  string
	Namespace  string
	Auth       state.Auth
	Secrets    []string // NAME=PATH
	Formats    []string // NAME=FORMAT
	Templates  []string // NAME=FILE
	SecretsDir string
	StateDir   string
	FileMode   string
	Timeout    time.Duration
}

func (c *Config) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.VaultAddr, "vault-addr", "", "Vault address (default $VAULT_ADDR)")
	fs.StringVar(&c.Namespace, "namespace", "", "Vault Enterprise namespace (default $VAULT_NAMESPACE)")
	fs.StringVar(&c.Auth.Method, "auth-method", login.Kubernetes, "how to log in: kubernetes, jwt, approle or token")
	fs.StringVar(&c.Auth.Mount, "auth-mount", "", "path the auth method is mounted at (default: the method's name)")
	fs.StringVar(&c.Auth.Role, "role", "", "Vault role to log in as (kubernetes, jwt)")
	fs.StringVar(&c.Auth.JWTFile, "jwt-file", login.DefaultJWTFile, "service-account token file (kubernetes, jwt)")
	fs.StringVar(&c.Auth.RoleIDFile, "role-id-file", "", "file holding the AppRole role_id (approle)")
	fs.StringVar(&c.Auth.SecretIDFile, "secret-id-file", "", "file holding the AppRole secret_id (approle)")
	fs.StringVar(&c.Auth.TokenFile, "token-file", "", "file holding a Vault token (token; default $VAULT_TOKEN)")
	fs.StringArrayVar(&c.Secrets, "secret", nil, "NAME=PATH: write the secret read from Vault PATH to SECRETS_DIR/NAME (repeatable, at least one)")
	fs.StringArrayVar(&c.Formats, "format", nil, "NAME=json|env|yaml: the file format of secret NAME (default json)")
	fs.StringArrayVar(&c.Templates, "template", nil, "NAME=FILE: render secret NAME with the Go text/template in FILE instead of a format")
	fs.StringVar(&c.SecretsDir, "secrets-dir", "/vault/secrets", "directory for the rendered secret files (shared with the app)")
	fs.StringVar(&c.StateDir, "state-dir", "/vault/state", "directory for the token and state.json (never shared with the app)")
	fs.StringVar(&c.FileMode, "file-mode", "0440", "permissions of the secret files")
	fs.DurationVar(&c.Timeout, "timeout", 2*time.Minute, "give up after this long; transient failures are retried with backoff until then")
}

// validNameChars is a secret name that is also a safe file name; the
// length limit (128) is checked apart, since a counted repeat makes the
// regexp slow to compile at every start.
var validNameChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func validName(name string) bool { return len(name) <= 128 && validNameChars.MatchString(name) }

// Spec is one secret the user asked for.
type Spec struct {
	Name, Path, Format string
	TemplateFile, Text string
	Template           *render.Template
}

// Validate checks the configuration and returns the secrets it asks for.
// Every error names the flag to fix.
func (c *Config) Validate(getenv func(string) string) ([]*Spec, error) {
	if c.VaultAddr == "" {
		c.VaultAddr = getenv("VAULT_ADDR")
	}
	if c.VaultAddr == "" {
		return nil, fmt.Errorf("--vault-addr (or VAULT_ADDR) is required")
	}
	if c.Namespace == "" {
		c.Namespace = getenv("VAULT_NAMESPACE")
	}
	if err := login.Validate(&c.Auth, getenv); err != nil {
		return nil, err
	}
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("--timeout %s: want a positive duration such as 2m", c.Timeout)
	}
	if _, err := state.ParseMode(c.FileMode); err != nil {
		return nil, fmt.Errorf("--file-mode: %w", err)
	}
	if c.SecretsDir == "" || c.StateDir == "" {
		return nil, fmt.Errorf("--secrets-dir and --state-dir must not be empty")
	}
	if filepath.Clean(c.SecretsDir) == filepath.Clean(c.StateDir) {
		return nil, fmt.Errorf("--secrets-dir and --state-dir are both %s: the state dir holds the token and must be a separate volume the app never mounts", c.StateDir)
	}
	if len(c.Secrets) == 0 {
		return nil, fmt.Errorf("--secret NAME=PATH is required at least once, e.g. --secret db=database/creds/app")
	}
	var specs []*Spec
	byName := map[string]*Spec{}
	byPath := map[string]string{}
	for _, kv := range c.Secrets {
		name, path, ok := strings.Cut(kv, "=")
		path = strings.Trim(strings.TrimSpace(path), "/")
		if !ok || path == "" {
			return nil, fmt.Errorf("--secret %q: want NAME=PATH, e.g. db=database/creds/app", kv)
		}
		if !validName(name) {
			return nil, fmt.Errorf("--secret %q: name %q must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (it is the file name)", kv, name)
		}
		if byName[name] != nil {
			return nil, fmt.Errorf("--secret %q: name %q is given twice", kv, name)
		}
		if other, dup := byPath[path]; dup {
			return nil, fmt.Errorf("--secret %q: path %s is already read for secret %q: read each path once (a template can render it into another shape)", kv, path, other)
		}
		byPath[path] = name
		s := &Spec{Name: name, Path: path, Format: render.JSON}
		byName[name] = s
		specs = append(specs, s)
	}
	formatted := map[string]bool{}
	for _, kv := range c.Formats {
		name, f, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--format %q: want NAME=json|env|yaml", kv)
		}
		s := byName[name]
		if s == nil {
			return nil, fmt.Errorf("--format %q: no --secret is named %q", kv, name)
		}
		if formatted[name] {
			return nil, fmt.Errorf("--format %q: secret %q already has a --format", kv, name)
		}
		formatted[name] = true
		if !render.ValidFormat(f) {
			return nil, fmt.Errorf("--format %q: format %q is not json, env or yaml", kv, f)
		}
		s.Format = f
	}
	for _, kv := range c.Templates {
		name, file, ok := strings.Cut(kv, "=")
		if !ok || file == "" {
			return nil, fmt.Errorf("--template %q: want NAME=FILE", kv)
		}
		s := byName[name]
		if s == nil {
			return nil, fmt.Errorf("--template %q: no --secret is named %q", kv, name)
		}
		if s.TemplateFile != "" {
			return nil, fmt.Errorf("--template %q: secret %q already has a template", kv, name)
		}
		if formatted[name] {
			return nil, fmt.Errorf("--template %q: secret %q also has a --format: give one or the other", kv, name)
		}
		b, err := readTemplate(file)
		if err != nil {
			return nil, fmt.Errorf("--template %q: %w", kv, err)
		}
		t, err := render.ParseTemplate(file, string(b))
		if err != nil {
			return nil, fmt.Errorf("--template %q: %w", kv, err)
		}
		s.TemplateFile, s.Text, s.Template = file, string(b), t
	}
	for _, s := range specs {
		if s.Template == nil {
			continue
		}
		for _, p := range s.Template.Paths() {
			if _, ok := byPath[p]; !ok {
				return nil, fmt.Errorf("--template %s=%s: the template reads %s, which is not a --secret: add --secret NAME=%s (each path is read once, at start)", s.Name, s.TemplateFile, p, p)
			}
		}
	}
	return specs, nil
}

// maxTemplate bounds a template file: templates are a few lines, and a
// wrong path (/dev/zero, a huge log) must fail instead of eating memory.
const maxTemplate = 1 << 20

// readTemplate reads a template file, refusing what is not a regular file
// (a FIFO or a device would block or never end) or is too large.
func readTemplate(file string) ([]byte, error) {
	fi, err := os.Stat(file) // follows symlinks, as ConfigMap volumes use them
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", file)
	}
	if fi.Size() > maxTemplate {
		return nil, fmt.Errorf("%s is %d bytes: a template must be at most %d", file, fi.Size(), maxTemplate)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTemplate+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxTemplate {
		return nil, fmt.Errorf("%s grew beyond %d bytes while it was read", file, maxTemplate)
	}
	return b, nil
}
