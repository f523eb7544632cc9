package initcmd

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/podlease/podlease/internal/annotations"
	"github.com/podlease/podlease/internal/cli"
	"github.com/podlease/podlease/internal/login"
	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
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
	// Annotations is the downward API file of the pod's annotations, read
	// once by Validate for podlease.io/* and vault.hashicorp.com/*
	// settings below flags and PODLEASE_* variables.
	Annotations string

	fs *pflag.FlagSet
	// Origins say where each setting came from, for the debug log;
	// Warnings name the annotations that were ignored.
	Origins  []Origin
	Warnings []Warning
}

// Origin is where one setting's value came from: "--role",
// "PODLEASE_ROLE", "vault.hashicorp.com/role", "VAULT_ADDR" or "default".
type Origin struct {
	Setting, Value, From string
	// Overridden marks an annotation that a flag or variable took
	// precedence over with another value.
	Overridden bool
}

func (c *Config) register(fs *pflag.FlagSet) {
	c.fs = fs
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
	fs.StringVar(&c.Annotations, "annotations", "", "downward API file of the pod's metadata.annotations: read podlease.io/<flag> and the Vault Agent injector's vault.hashicorp.com/* annotations (flags and PODLEASE_* take precedence)")
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
	// FileMode is the file's permissions (default --file-mode).
	FileMode string
}

// Validate checks the configuration and returns the secrets it asks for.
// With --annotations it first reads the pod's annotations once; they fill
// in what no flag and no PODLEASE_* variable set, and come before the
// defaults (VAULT_ADDR and VAULT_NAMESPACE included). Every error names
// the flag or annotation to fix.
func (c *Config) Validate(getenv func(string) string) ([]*Spec, error) {
	var ann *fromAnnotations
	annFrom := map[string]string{} // flag -> annotation that set it
	if c.Annotations != "" {
		m, err := annotations.Read(c.Annotations)
		if err != nil {
			return nil, fmt.Errorf("--annotations: %w", err)
		}
		if ann, err = readAnnotations(m); err != nil {
			return nil, err
		}
		if err := c.applyScalars(ann, annFrom); err != nil {
			return nil, err
		}
		c.Warnings = ann.warnings
	}
	addrFrom := c.source("vault-addr")
	if a, ok := annFrom["vault-addr"]; ok {
		addrFrom = "annotation " + a
	}
	if c.VaultAddr == "" {
		c.VaultAddr, addrFrom = getenv("VAULT_ADDR"), "VAULT_ADDR"
		annFrom["vault-addr"] = "VAULT_ADDR"
	}
	if c.VaultAddr == "" {
		return nil, fmt.Errorf("--vault-addr (or VAULT_ADDR) is required")
	}
	if u, err := url.Parse(c.VaultAddr); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s %q: want a URL with http:// or https://, such as https://vault.vault.svc:8200", addrFrom, c.VaultAddr)
	}
	if c.Namespace == "" && getenv("VAULT_NAMESPACE") != "" {
		c.Namespace = getenv("VAULT_NAMESPACE")
		annFrom["namespace"] = "VAULT_NAMESPACE"
	}
	if err := checkClientSettings(c.VaultAddr, c.Namespace); err != nil {
		return nil, err
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
	if within(c.StateDir, c.SecretsDir) || within(c.SecretsDir, c.StateDir) {
		return nil, fmt.Errorf("--secrets-dir %s and --state-dir %s: one is inside the other; the state dir holds the token and must be a separate volume the app never mounts", c.SecretsDir, c.StateDir)
	}
	if ann != nil {
		if err := c.checkAgreement(ann, getenv); err != nil {
			return nil, err
		}
	}
	c.scalarOrigins(annFrom)
	return c.specs(ann)
}

// specs builds the secrets from the --secret, --format and --template
// flags and, for names no flag took, from the annotations.
func (c *Config) specs(ann *fromAnnotations) ([]*Spec, error) {
	var specs []*Spec
	byName := map[string]*Spec{}
	byPath := map[string]string{}
	add := func(what, name, path, from string) error {
		path = strings.Trim(strings.TrimSpace(path), "/")
		if path == "" {
			return fmt.Errorf("%s: want NAME=PATH, e.g. db=database/creds/app", what)
		}
		if tokenPath(path) {
			return fmt.Errorf("%s: Vault answers %s with a Vault token, which must never reach the app's files: vault-init refuses auth/token/lookup*, auth/token/create* and sys/wrapping/*", what, path)
		}
		if byName[name] != nil {
			return fmt.Errorf("%s: name %q is given twice", what, name)
		}
		if other, dup := byPath[path]; dup {
			return fmt.Errorf("%s: path %s is already read for secret %q: read each path once (a template can render it into another shape)", what, path, other)
		}
		byPath[path] = name
		s := &Spec{Name: name, Path: path, Format: render.JSON, FileMode: c.FileMode}
		byName[name] = s
		specs = append(specs, s)
		c.Origins = append(c.Origins, Origin{Setting: "secret " + name, Value: path, From: from})
		return nil
	}
	for _, kv := range c.Secrets {
		name, path, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--secret %q: want NAME=PATH, e.g. db=database/creds/app", kv)
		}
		if !validName(name) {
			return nil, fmt.Errorf("--secret %q: name %q must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (it is the file name)", kv, name)
		}
		if err := add(fmt.Sprintf("--secret %q", kv), name, path, c.source("secret")); err != nil {
			return nil, err
		}
	}
	if ann != nil {
		for _, as := range ann.secrets {
			if s := byName[as.name]; s != nil {
				c.overridden(as.path, s.Path, c.source("secret"))
				continue
			}
			if err := add("annotation "+as.path.key, as.name, as.path.value, as.path.key); err != nil {
				return nil, err
			}
		}
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("--secret NAME=PATH is required at least once, e.g. --secret db=database/creds/app (or, with --annotations, podlease.io/secret-NAME or vault.hashicorp.com/agent-inject-secret-NAME)")
	}

	rendered := map[string]bool{} // secrets whose rendering a flag chose
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
		rendered[name] = true
		c.Origins = append(c.Origins, Origin{Setting: "format " + name, Value: f, From: c.source("format")})
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
		rendered[name] = true
		c.Origins = append(c.Origins, Origin{Setting: "template " + name, Value: file, From: c.source("template")})
	}
	if ann != nil {
		if err := c.annotatedSecrets(ann, byName, rendered); err != nil {
			return nil, err
		}
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
	if err := checkStateSize(specs); err != nil {
		return nil, err
	}
	return specs, nil
}

// checkStateSize refuses, before login, templates that would make
// state.json larger than vault-renew and vault-revoke read: state.json
// keeps each template's text, and while vault-renew swaps a credential in
// it holds the new one's entry beside the old (so twice), plus a little
// for everything else.
func checkStateSize(specs []*Spec) error {
	const perSecret, rest = 2 << 10, 16 << 10
	n, total := rest, 0
	for _, s := range specs {
		size := perSecret + state.TextSize(s.Text)
		n += 2 * size
		total += size
	}
	if n > state.MaxFile {
		return fmt.Errorf("--template: the templates take %d bytes in state.json, which must hold them twice and stay under %d bytes (what vault-renew and vault-revoke read): give fewer or smaller templates", total, state.MaxFile)
	}
	return nil
}

// clientVariables are the VAULT_* variables Vault's client reads for its
// settings, in the order it reads them.
var clientVariables = []string{
	"VAULT_AGENT_ADDR", "VAULT_MAX_RETRIES", "VAULT_CACERT", "VAULT_CACERT_BYTES", "VAULT_CAPATH",
	"VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_RATE_LIMIT", "VAULT_CLIENT_TIMEOUT",
	"VAULT_SKIP_VERIFY", "VAULT_SRV_LOOKUP", "VAULT_TLS_SERVER_NAME", "VAULT_HTTP_PROXY",
	"VAULT_PROXY_ADDR", "VAULT_DISABLE_REDIRECTS",
}

// checkClientSettings builds the Vault client once, so that a VAULT_*
// variable it cannot use (a CA file that is missing, VAULT_SKIP_VERIFY=maybe)
// is a usage error before any file or directory is written. Vault's
// client reads the process environment itself, so the variables are
// named from there.
func checkClientSettings(addr, namespace string) error {
	if _, err := vaultclient.New(addr, namespace, 0, nil); err != nil {
		return fmt.Errorf("%s: fix or unset it (the Vault client reads it, as the vault CLI does)", clientSettingsError(err, os.Getenv))
	}
	return nil
}

// clientSettingsError names the variable behind err: Vault's client names
// some (could not parse VAULT_SKIP_VERIFY) and only shows the value of
// others (open /etc/vault/ca.pem: no such file or directory). A proxy
// address may hold a password: its value is replaced by its name.
func clientSettingsError(err error, getenv func(string) string) string {
	msg := err.Error()
	var set, shown []string
	for _, v := range clientVariables {
		value := getenv(v)
		if value == "" {
			continue
		}
		set = append(set, v)
		switch {
		case v == "VAULT_CACERT_BYTES":
			// A certificate's bytes are not worth quoting, nor matching.
		case v == "VAULT_HTTP_PROXY" || v == "VAULT_PROXY_ADDR":
			if strings.Contains(msg, value) {
				// The URL parser quotes the value, and besides it
				// the part it stumbled on, which may be a piece of
				// a password: none of its words are kept.
				return v + " is not a valid URL (its value is not shown: a proxy URL may hold a password)"
			}
		case strings.Contains(msg, value):
			shown = append(shown, fmt.Sprintf("%s=%s", v, value))
		}
	}
	for _, v := range set {
		if strings.Contains(msg, v) {
			return msg
		}
	}
	switch {
	case len(shown) > 0:
		return strings.Join(shown, ", ") + ": " + msg
	case len(set) > 0:
		return msg + " (set: " + strings.Join(set, ", ") + ")"
	}
	return msg
}

// tokenPath reports a Vault path whose answer holds a Vault token (the
// token's id, a new token, a wrapping token). It is matched after any
// namespace prefix (ns1/auth/token/lookup-self), which may refuse a KV
// secret with such a name deep in its path: better than a token on disk.
func tokenPath(p string) bool {
	p = path.Clean("/" + p)
	for _, refused := range []string{"/auth/token/lookup", "/auth/token/create", "/sys/wrapping/"} {
		if strings.Contains(p, refused) || p+"/" == refused {
			return true
		}
	}
	return false
}

// within reports whether dir lies below parent.
func within(dir, parent string) bool {
	rel, err := filepath.Rel(filepath.Clean(parent), filepath.Clean(dir))
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// source says where a flag's value came from.
func (c *Config) source(flag string) string {
	if c.fs == nil || c.fs.Lookup(flag) == nil {
		return "--" + flag
	}
	return cli.Source(c.fs.Lookup(flag))
}

// applyScalars sets each pod-wide flag no flag or variable set from its
// annotation, recording which annotation set it in from.
func (c *Config) applyScalars(a *fromAnnotations, from map[string]string) error {
	for _, flag := range ownScalars {
		s, ok := a.scalars[flag]
		if !ok {
			continue
		}
		f := c.fs.Lookup(flag)
		if f.Changed {
			c.overridden(s, f.Value.String(), cli.Source(f))
			continue
		}
		if err := c.fs.Set(flag, s.value); err != nil {
			return fmt.Errorf("annotation %s: %w", s.key, err)
		}
		from[flag] = s.key
	}
	return nil
}

// overridden notes an annotation a flag or variable took precedence over
// with another value.
func (c *Config) overridden(s setting, value, by string) {
	if s.set() && s.value != value {
		c.Origins = append(c.Origins, Origin{Setting: s.key, Value: s.value, From: by, Overridden: true})
	}
}

// scalarOrigins records where every pod-wide flag's value came from.
func (c *Config) scalarOrigins(annFrom map[string]string) {
	if c.fs == nil {
		return
	}
	for _, flag := range append(ownScalars, "annotations") {
		f := c.fs.Lookup(flag)
		from := cli.Source(f)
		if a, ok := annFrom[flag]; ok {
			from = a
		}
		c.Origins = append(c.Origins, Origin{Setting: flag, Value: f.Value.String(), From: from})
	}
}

// checkAgreement refuses injector annotations that podlease can only honour
// through settings shared by all three binaries, when those settings say
// something else.
func (c *Config) checkAgreement(a *fromAnnotations, getenv func(string) string) error {
	envs := make([]string, 0, len(a.envCheck))
	for env := range a.envCheck {
		envs = append(envs, env)
	}
	slices.Sort(envs)
	for _, env := range envs {
		s := a.envCheck[env]
		have := getenv(env)
		same := have == s.value
		if env == "VAULT_SKIP_VERIFY" {
			want, err := strconv.ParseBool(s.value)
			if err != nil {
				return fmt.Errorf("annotation %s: %q is not true or false", s.key, s.value)
			}
			got, _ := strconv.ParseBool(have) // unset or unparsable: verification is on
			same = want == got
		}
		if !same {
			return fmt.Errorf("annotation %s %q: vault-renew and vault-revoke read no annotations, so podlease takes TLS settings from the environment of all three: set %s=%s in the podlease ConfigMap (and mount what it names into vault-init and vault-renew), or remove the annotation", s.key, s.value, env, s.value)
		}
	}
	for _, s := range a.volume {
		if filepath.Clean(s.value) != filepath.Clean(c.SecretsDir) {
			return fmt.Errorf("annotation %s %q: the secrets are written to %s (--secrets-dir) and the podlease component mounts them there in the app container; mount the podlease-secrets volume at %s in the app with a patch and set podlease.io/secrets-dir to match, or remove the annotation", s.key, s.value, c.SecretsDir, s.value)
		}
	}
	return nil
}

// annotatedSecrets applies the annotations' rendering, file names and
// permissions to the secrets; a rendering chosen by a flag wins.
func (c *Config) annotatedSecrets(a *fromAnnotations, byName map[string]*Spec, rendered map[string]bool) error {
	given := map[string]bool{} // every secret's path
	for _, s := range byName {
		given[s.Path] = true
	}
	for _, as := range a.secrets {
		s := byName[as.name]
		annPath := strings.Trim(strings.TrimSpace(as.path.value), "/")
		if as.agentDefault != "" {
			// Vault Agent's default template renders the secret's own
			// path: the one a --secret of the same name gave, if any.
			as.template.value = fmt.Sprintf(as.agentDefault, strconv.Quote(s.Path))
		}
		if rendered[as.name] {
			by := c.source("format")
			if s.Template != nil {
				by = c.source("template")
			}
			c.overridden(firstSet(as.format, as.template, as.templateFile), "", by)
		} else {
			if err := renderFromAnnotations(as, s); err != nil {
				return err
			}
			if s.Template != nil && annPath != s.Path && !given[annPath] && slices.Contains(s.Template.Paths(), annPath) {
				// A template written for the annotation's path is the
				// user's text: it is not rewritten for the new path.
				return fmt.Errorf("annotation %s reads %s, the path of annotation %s, but %s gave secret %q the path %s: give %q a --template or --format of its own, or write the annotation's template for %s",
					firstSet(as.template, as.templateFile).key, annPath, as.path.key, c.source("secret"), as.name, s.Path, as.name, s.Path)
			}
			if from := firstSet(as.format, as.template, as.templateFile); from.set() {
				how := s.Format
				if s.Template != nil {
					how = "template"
				}
				c.Origins = append(c.Origins, Origin{Setting: "rendering " + as.name, Value: how, From: from.key})
			}
		}
		if as.file.set() {
			// The file name becomes the secret's name: podlease writes
			// each secret as NAME in the secrets directory.
			f, err := agentFile(as.file)
			if err != nil {
				return err
			}
			if other := byName[f]; other != nil && other != s {
				return fmt.Errorf("annotation %s: secrets %q and %q would both write %s/%s: give one another file name", as.file.key, other.Name, as.name, c.SecretsDir, f)
			}
			delete(byName, s.Name)
			s.Name = f
			byName[f] = s
			c.Origins = append(c.Origins, Origin{Setting: "file " + as.name, Value: f, From: as.file.key})
		}
		if as.perms.set() {
			if _, err := state.ParseMode(as.perms.value); err != nil {
				return fmt.Errorf("annotation %s: %w", as.perms.key, err)
			}
			s.FileMode = as.perms.value
			c.Origins = append(c.Origins, Origin{Setting: "file mode " + as.name, Value: as.perms.value, From: as.perms.key})
		}
	}
	return nil
}

// renderFromAnnotations sets how s is rendered from its annotations: a
// format, an inline template, or a template file (an inline template wins
// over a file, as with the injector).
func renderFromAnnotations(as *annSecret, s *Spec) error {
	if as.format.set() {
		if as.template.set() || as.templateFile.set() {
			return fmt.Errorf("annotations %s and %s: give a format or a template, not both", as.format.key, firstSet(as.template, as.templateFile).key)
		}
		if !render.ValidFormat(as.format.value) {
			return fmt.Errorf("annotation %s: format %q is not json, env or yaml", as.format.key, as.format.value)
		}
		s.Format = as.format.value
		return nil
	}
	var text, name string
	switch {
	case as.template.set():
		text, name = as.template.value, as.template.key
	case as.templateFile.set():
		b, err := readTemplate(as.templateFile.value)
		if err != nil {
			return fmt.Errorf("annotation %s: %w", as.templateFile.key, err)
		}
		text, name = string(b), as.templateFile.value
	default:
		return nil
	}
	t, err := render.ParseTemplate(name, text)
	if err != nil {
		return fmt.Errorf("annotation %s: %w", firstSet(as.template, as.templateFile).key, err)
	}
	s.TemplateFile, s.Text, s.Template = name, text, t
	return nil
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
