package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// AgentConfig is a Vault Agent configuration of the shape the Vault Agent
// injector generates (vault-k8s agent-inject/agent/config.go): kubernetes
// auto-auth (at auth/kubernetes unless AuthMount says otherwise), one file sink, exit_on_retry_failure, and
// templates with the injector's explicit delimiters and
// error_on_missing_key. The tests that compare vault-init with Vault Agent
// and the bench's Agent contender all run the Agent from it, so they
// measure and compare the same Agent.
type AgentConfig struct {
	VaultAddr string
	AuthMount string // the kubernetes auth mount, without auth/; empty: kubernetes
	Role      string // kubernetes auth role
	JWTFile   string // the service-account token auto-auth reads
	SinkFile  string // where the Agent writes its token
	PIDFile   string
	// ExitAfterAuth is the injector's init container: render once, exit.
	ExitAfterAuth bool
	Templates     []AgentTemplate
}

// AgentTemplate is one template stanza: Contents inline (as the injector
// writes it) or a Source file.
type AgentTemplate struct {
	Source, Contents string
	Destination      string
	Perms            string // e.g. "0440"; empty: the Agent's default
}

// JSON is the configuration file's contents.
func (c AgentConfig) JSON() ([]byte, error) {
	type tmpl struct {
		Source            string `json:"source,omitempty"`
		Contents          string `json:"contents,omitempty"`
		Destination       string `json:"destination"`
		Perms             string `json:"perms,omitempty"`
		LeftDelimiter     string `json:"left_delimiter"`
		RightDelimiter    string `json:"right_delimiter"`
		ErrorOnMissingKey bool   `json:"error_on_missing_key"`
	}
	ts := make([]tmpl, 0, len(c.Templates))
	for _, t := range c.Templates {
		if (t.Source == "") == (t.Contents == "") {
			return nil, fmt.Errorf("agent template for %s: give exactly one of Source and Contents", t.Destination)
		}
		ts = append(ts, tmpl{Source: t.Source, Contents: t.Contents, Destination: t.Destination, Perms: t.Perms,
			LeftDelimiter: "{{", RightDelimiter: "}}"})
	}
	mount := c.AuthMount
	if mount == "" {
		mount = "kubernetes"
	}
	cfg := map[string]any{
		"exit_after_auth": c.ExitAfterAuth,
		"pid_file":        c.PIDFile,
		"vault":           map[string]any{"address": c.VaultAddr},
		"auto_auth": map[string]any{
			"method": map[string]any{
				"type": "kubernetes", "mount_path": "auth/" + mount,
				"config": map[string]any{"role": c.Role, "token_path": c.JWTFile},
			},
			"sink": []map[string]any{{"type": "file", "config": map[string]any{"path": c.SinkFile}}},
		},
		"template_config": map[string]any{"exit_on_retry_failure": true},
		"template":        ts,
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// Templates hold < > &: keep them as they are, not \u003c.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteFile writes the configuration to file, mode 0600.
func (c AgentConfig) WriteFile(file string) error {
	b, err := c.JSON()
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o600)
}

// RunAgent writes cfg to dir/agent.json and runs Vault Agent (the bed's
// vault binary) with it in dir until it exits, or ctx ends: cfg should set
// ExitAfterAuth. env is added to a minimal environment (PATH, HOME=dir).
// On failure the error holds the last lines of the Agent's output.
func RunAgent(ctx context.Context, dir string, cfg AgentConfig, env ...string) error {
	file := filepath.Join(dir, "agent.json")
	if err := cfg.WriteFile(file); err != nil {
		return err
	}
	vault, err := VaultBinary()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, vault, "agent", "-config="+file)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + dir}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		return fmt.Errorf("vault agent: %v (ctx: %v)\n%s", err, ctx.Err(), strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
	return nil
}
