package initcmd

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Annotation prefixes vault-init reads configuration from.
const (
	ownPrefix   = "podlease.io/"
	agentPrefix = "vault.hashicorp.com/"
)

// ownScalars are the vault-init flags a podlease.io/<flag> annotation may
// set. Per-secret flags are podlease.io/secret-NAME, format-NAME and
// template-NAME (the template text itself).
var ownScalars = []string{
	"vault-addr", "namespace", "auth-method", "auth-mount", "role", "jwt-file",
	"role-id-file", "secret-id-file", "token-file", "secrets-dir", "state-dir",
	"file-mode", "timeout",
}

// agentScalars maps the Vault Agent injector's pod-wide annotations that
// mean the same here to the vault-init flag they set.
var agentScalars = map[string]string{
	"role":      "role",
	"auth-path": "auth-mount",
	"auth-type": "auth-method",
	"namespace": "namespace",
	"service":   "vault-addr",
}

// agentEnvChecks are the injector's TLS annotations. vault-renew and
// vault-revoke read no annotations, so the TLS settings must reach all
// three binaries the same way, through the VAULT_* environment: these
// annotations are accepted when they agree with it, and refused otherwise.
var agentEnvChecks = map[string]string{
	"ca-cert":         "VAULT_CACERT",
	"tls-server-name": "VAULT_TLS_SERVER_NAME",
	"tls-skip-verify": "VAULT_SKIP_VERIFY",
}

// agentRefused are injector annotations that cannot mean the same here,
// with what to do instead. vault-init exits 2 naming the annotation.
var agentRefused = map[string]string{
	"agent-configmap":       "podlease takes no Vault Agent configuration: express it with annotations or flags",
	"agent-extra-secret":    "mount the Secret into vault-init and vault-renew with a patch and point VAULT_CACERT (or VAULT_CLIENT_CERT/KEY) at it in the podlease ConfigMap",
	"agent-json-patch":      "patch the podlease containers with a kustomize patch instead",
	"agent-init-json-patch": "patch the podlease containers with a kustomize patch instead",
	"tls-secret":            "mount the Secret into vault-init and vault-renew with a patch and set VAULT_CACERT in the podlease ConfigMap",
	"ca-key":                "set VAULT_CAPATH in the podlease ConfigMap",
	"client-cert":           "set VAULT_CLIENT_CERT in the podlease ConfigMap",
	"client-key":            "set VAULT_CLIENT_KEY in the podlease ConfigMap",
	"proxy-address":         "set HTTPS_PROXY in the podlease ConfigMap",
	"agent-inject-token":    "podlease never gives the app the Vault token; the app reads its secrets from files",
}

// agentRefusedPerSecret are per-secret injector annotations
// (<annotation>-NAME) that cannot mean the same here.
var agentRefusedPerSecret = map[string]string{
	"agent-inject-command":       "to tell the app about a new credential, use vault-renew's --notify-signal or --notify-url",
	"agent-template-left-delim":  "podlease templates use {{ }}",
	"agent-template-right-delim": "podlease templates use {{ }}",
}

// agentIgnored are injector annotations about the agent container itself
// or its tuning: vault-init logs one warning naming each and goes on.
var agentIgnored = []string{
	"agent-image", "agent-init-first", "agent-pre-populate", "agent-pre-populate-only",
	"agent-limits-cpu", "agent-limits-mem", "agent-limits-ephemeral",
	"agent-requests-cpu", "agent-requests-mem", "agent-requests-ephemeral",
	"agent-revoke-on-shutdown", "agent-revoke-grace",
	"agent-run-as-user", "agent-run-as-group", "agent-run-as-same-user",
	"agent-set-security-context", "agent-share-process-namespace",
	"agent-service-account-token-volume-name", "agent-request-namespace",
	"agent-cache-enable", "agent-cache-use-auto-auth-token", "agent-cache-listener-port", "agent-cache-exit-on-err",
	"agent-copy-volume-mounts", "agent-enable-quit", "agent-auto-auth-exit-on-err",
	"agent-disable-idle-connections", "agent-disable-keep-alives",
	"auth-min-backoff", "auth-max-backoff",
	"client-max-retries", "client-timeout", "go-max-procs", "log-level", "log-format",
	"template-config-exit-on-retry-failure", "template-static-secret-render-interval",
	"template-max-connections-per-host", "template-lease-renewal-threshold",
	"agent-inject", "agent-inject-status", "agent-inject-containers",
}

// ignoredWhy says why an ignored annotation makes no difference, where the
// general reason (it tunes the agent container) does not say it.
var ignoredWhy = map[string]string{
	"agent-inject":             "the Vault Agent injector, if installed, still injects its agent: remove it once the workload has moved",
	"agent-inject-status":      "the Vault Agent injector has injected this pod too: remove vault.hashicorp.com/agent-inject",
	"agent-inject-containers":  "the podlease component mounts the secrets into the first app container; patch in the others (docs/migrating-from-vault-agent.md)",
	"agent-revoke-on-shutdown": "podlease always revokes the pod's credentials when the pod ends",
	"agent-pre-populate":       "podlease always runs vault-init before the app and vault-renew beside it",
	"agent-pre-populate-only":  "podlease always runs vault-init before the app and vault-renew beside it",
	"agent-init-first":         "vault-init always runs before the app's own init containers",
	"error-on-missing-key":     "podlease always fails on a missing key in a template",
}

// Warning is an annotation vault-init ignored, and why.
type Warning struct{ Annotation, Why string }

func (a *fromAnnotations) ignore(key, rest string) {
	why, ok := ignoredWhy[rest]
	if !ok {
		why = "it tunes the Vault Agent container, which podlease replaces"
	}
	a.warnings = append(a.warnings, Warning{key, why})
}

// agentIgnoredPrefixes are families of ignored injector annotations.
var agentIgnoredPrefixes = []string{"agent-telemetry-"}

// agentPerSecret are the injector's per-secret annotations, longest
// first, so that agent-inject-template-file-NAME is not read as
// agent-inject-template- of a secret named "file-NAME" (the injector's
// own order).
var agentPerSecret = []string{
	"agent-inject-template-file-", "agent-inject-template-", "agent-inject-secret-",
	"agent-inject-file-", "agent-inject-perms-", "agent-inject-command-",
	"agent-template-left-delim-", "agent-template-right-delim-",
	"error-on-missing-key-", "preserve-secret-case-", "secret-volume-path-",
}

// Vault Agent's default templates, for an injector secret without a
// template: "map" (the default) writes key: value lines of the secret's
// data, "json" its data as JSON.
const (
	agentMapTemplate  = "{{ with secret %s }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}"
	agentJSONTemplate = "{{ with secret %s }}{{ .Data | toJSON }}\n{{ end }}"
)

// setting is one value read from an annotation, and the annotation.
type setting struct{ key, value string }

func (s setting) set() bool { return s.key != "" }

// annSecret is one secret the annotations ask for.
type annSecret struct {
	name         string
	path         setting
	format       setting
	template     setting // template text
	templateFile setting
	file         setting
	perms        setting
	agent        bool // declared by injector annotations: Agent's default template applies
	// agentDefault is Vault Agent's default template, with %s for the
	// quoted path, when template is that default: the path is the one
	// vault-init reads, which a --secret of the same name may replace.
	agentDefault string
}

// fromAnnotations is what the pod's annotations ask vault-init for, before
// flags and the environment take precedence over it.
type fromAnnotations struct {
	scalars  map[string]setting // flag name -> value
	secrets  []*annSecret
	envCheck map[string]setting // VAULT_* variable -> the annotation that must agree
	volume   []setting          // secret-volume-path annotations: must name --secrets-dir
	warnings []Warning
}

// readAnnotations sorts the pod's annotations into settings. An
// annotation podlease does not know under podlease.io/ or
// vault.hashicorp.com/, or one that cannot mean the same here, is an
// error naming it; annotations of other tools are not looked at.
func readAnnotations(ann map[string]string) (*fromAnnotations, error) {
	a := &fromAnnotations{scalars: map[string]setting{}, envCheck: map[string]setting{}}
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	// The injector's secret names are lower-cased unless
	// preserve-secret-case says otherwise, for that secret or for all.
	preserveAll, err := agentBool(ann, agentPrefix+"preserve-secret-case")
	if err != nil {
		return nil, err
	}
	agentName := func(raw string) (string, error) {
		preserve := preserveAll
		if _, ok := ann[agentPrefix+"preserve-secret-case-"+raw]; ok {
			if preserve, err = agentBool(ann, agentPrefix+"preserve-secret-case-"+raw); err != nil {
				return "", err
			}
		}
		if preserve {
			return raw, nil
		}
		return strings.ToLower(raw), nil
	}
	byName := map[string]*annSecret{}
	secret := func(name string, agent bool) *annSecret {
		s := byName[name]
		if s == nil {
			s = &annSecret{name: name}
			byName[name] = s
			a.secrets = append(a.secrets, s)
		}
		s.agent = s.agent || agent
		return s
	}
	var defaultTemplate setting

	for _, key := range keys {
		value := ann[key]
		switch {
		case strings.HasPrefix(key, ownPrefix):
			if err := a.own(key, value, secret); err != nil {
				return nil, err
			}
		case strings.HasPrefix(key, agentPrefix):
			rest := strings.TrimPrefix(key, agentPrefix)
			if strings.TrimSpace(value) == "" {
				// The injector treats an empty annotation as unset.
				continue
			}
			if rest == "agent-inject-default-template" {
				if value != "map" && value != "json" {
					return nil, fmt.Errorf("annotation %s: %q is not map or json", key, value)
				}
				defaultTemplate = setting{key, value}
				continue
			}
			if rest == "preserve-secret-case" {
				continue // read above
			}
			if err := a.agent(key, rest, value, secret, agentName); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range a.secrets {
		if !s.path.set() {
			from := firstSet(s.template, s.templateFile, s.format, s.file, s.perms).key
			return nil, fmt.Errorf("annotation %s: no Vault path for secret %q: add %ssecret-%s: PATH (or %sagent-inject-secret-%s)", from, s.name, ownPrefix, s.name, agentPrefix, s.name)
		}
		if s.agent && !s.template.set() && !s.templateFile.set() && !s.format.set() {
			tmpl, key := agentMapTemplate, "Vault Agent's default template (map)"
			if defaultTemplate.value == "json" {
				tmpl, key = agentJSONTemplate, "Vault Agent's default template (json, "+defaultTemplate.key+")"
			}
			// The path as vault-init reads it, so that the template's
			// secret call finds it; annotatedSecrets writes it again with
			// the path of a --secret that replaced this one.
			path := strings.Trim(strings.TrimSpace(s.path.value), "/")
			s.template = setting{key, fmt.Sprintf(tmpl, strconv.Quote(path))}
			s.agentDefault = tmpl
		}
	}
	return a, nil
}

func firstSet(ss ...setting) setting {
	for _, s := range ss {
		if s.set() {
			return s
		}
	}
	return setting{}
}

// own reads one podlease.io/ annotation.
func (a *fromAnnotations) own(key, value string, secret func(string, bool) *annSecret) error {
	rest := strings.TrimPrefix(key, ownPrefix)
	if rest == "inject" {
		return nil // the component's label, sometimes also an annotation
	}
	if slices.Contains(ownScalars, rest) {
		return a.scalar(rest, setting{key, value})
	}
	for _, p := range []string{"secret-", "format-", "template-"} {
		name, ok := strings.CutPrefix(rest, p)
		if !ok {
			continue
		}
		if !validName(name) {
			return fmt.Errorf("annotation %s: secret name %q must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (it is the file name)", key, name)
		}
		s := secret(name, false)
		switch p {
		case "secret-":
			return setOnce(&s.path, key, value)
		case "format-":
			return setOnce(&s.format, key, value)
		default:
			return setOnce(&s.template, key, value)
		}
	}
	return fmt.Errorf("annotation %s: unknown: podlease.io/ takes vault-init's flags (%s) and secret-NAME, format-NAME, template-NAME", key, strings.Join(ownScalars, ", "))
}

// agent reads one vault.hashicorp.com/ annotation (rest is the key
// without the prefix).
func (a *fromAnnotations) agent(key, rest, value string, secret func(string, bool) *annSecret, agentName func(string) (string, error)) error {
	if flag, ok := agentScalars[rest]; ok {
		switch rest {
		case "auth-path":
			// The injector's auth-path is the whole path, auth/kubernetes;
			// --auth-mount is the mount, kubernetes.
			value = strings.TrimPrefix(strings.Trim(value, "/"), "auth/")
		case "auth-type":
			if value != "kubernetes" && value != "jwt" {
				return fmt.Errorf("annotation %s: auth type %q is not supported: podlease logs in with kubernetes or jwt (or, by flag, approle or token)", key, value)
			}
		}
		return a.scalar(flag, setting{key, value})
	}
	if env, ok := agentEnvChecks[rest]; ok {
		a.envCheck[env] = setting{key, value}
		return nil
	}
	if rest == "secret-volume-path" {
		a.volume = append(a.volume, setting{key, value})
		return nil
	}
	if hint, ok := agentRefused[rest]; ok {
		return fmt.Errorf("annotation %s is not supported: %s; then remove the annotation", key, hint)
	}
	if strings.HasPrefix(rest, "auth-config-") {
		return fmt.Errorf("annotation %s is not supported: podlease's login takes --role, --auth-mount and --jwt-file (podlease.io/role, ...); remove the annotation", key)
	}
	if slices.Contains(agentIgnored, rest) || slices.ContainsFunc(agentIgnoredPrefixes, func(p string) bool { return strings.HasPrefix(rest, p) }) {
		a.ignore(key, rest)
		return nil
	}
	if rest == "error-on-missing-key" {
		return a.missingKey(key, value)
	}
	for _, p := range agentPerSecret {
		raw, ok := strings.CutPrefix(rest, p)
		if !ok || raw == "" {
			continue
		}
		if hint, refused := agentRefusedPerSecret[strings.TrimSuffix(p, "-")]; refused {
			return fmt.Errorf("annotation %s is not supported: %s; then remove the annotation", key, hint)
		}
		switch p {
		case "preserve-secret-case-":
			return nil // read with the name
		case "error-on-missing-key-":
			return a.missingKey(key, value)
		case "secret-volume-path-":
			a.volume = append(a.volume, setting{key, value})
			return nil
		}
		name, err := agentName(raw)
		if err != nil {
			return err
		}
		if !validName(name) {
			return fmt.Errorf("annotation %s: secret name %q must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (podlease writes it as a file name)", key, name)
		}
		s := secret(name, true)
		switch p {
		case "agent-inject-secret-":
			return setOnce(&s.path, key, value)
		case "agent-inject-template-":
			return setOnce(&s.template, key, value)
		case "agent-inject-template-file-":
			return setOnce(&s.templateFile, key, value)
		case "agent-inject-perms-":
			return setOnce(&s.perms, key, value)
		case "agent-inject-file-":
			return setOnce(&s.file, key, value)
		}
	}
	return fmt.Errorf("annotation %s is not one podlease knows: see docs/migrating-from-vault-agent.md for the injector annotations it reads, ignores or refuses", key)
}

// missingKey accepts error-on-missing-key: podlease always fails on a
// missing key, so "true" means the same and "false" earns a warning.
func (a *fromAnnotations) missingKey(key, value string) error {
	on, err := strconv.ParseBool(value)
	if err != nil {
		return fmt.Errorf("annotation %s: %q is not true or false", key, value)
	}
	if !on {
		a.ignore(key, "error-on-missing-key")
	}
	return nil
}

// scalar records a pod-wide setting; two annotations may set the same flag
// only to the same value.
func (a *fromAnnotations) scalar(flag string, s setting) error {
	if prev, ok := a.scalars[flag]; ok && prev.value != s.value {
		return fmt.Errorf("annotations %s and %s disagree (%q, %q): remove one", prev.key, s.key, prev.value, s.value)
	}
	if _, ok := a.scalars[flag]; !ok {
		a.scalars[flag] = s
	}
	return nil
}

func setOnce(dst *setting, key, value string) error {
	if dst.set() && dst.value != value {
		return fmt.Errorf("annotations %s and %s disagree for the same secret: remove one", dst.key, key)
	}
	if !dst.set() {
		*dst = setting{key, value}
	}
	return nil
}

func agentBool(ann map[string]string, key string) (bool, error) {
	v, ok := ann[key]
	if !ok || strings.TrimSpace(v) == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("annotation %s: %q is not true or false", key, v)
	}
	return b, nil
}

// agentFile checks an injector agent-inject-file value: podlease writes
// each secret as one file directly in --secrets-dir.
func agentFile(s setting) (string, error) {
	f := filepath.Clean(s.value)
	if !validName(f) {
		return "", fmt.Errorf("annotation %s: %q: podlease writes each secret as a file directly in the secrets directory: give a file name (letters, digits, '.', '_', '-') without '/'", s.key, s.value)
	}
	return f, nil
}
