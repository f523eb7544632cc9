// Package initcmd is vault-init: log in to Vault as the pod, read every
// requested secret, and write the secret files, the token and state.json,
// all or nothing.
package initcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/cli"
	"github.com/podlease/podlease/internal/login"
	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

const name = "vault-init"

const summary = `Log in to Vault with the pod's identity, read each --secret, and write one
file per secret into --secrets-dir plus the token and state.json into
--state-dir for vault-renew and vault-revoke.`

// Run is vault-init's main: it returns the process exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var (
		c     Config
		specs []*Spec
	)
	return cli.Main(ctx, cli.Command{
		Name: name, Summary: summary, Flags: c.register,
		Validate: func(getenv func(string) string) (err error) {
			specs, err = c.Validate(getenv)
			return err
		},
		Run: func(ctx context.Context, log *slog.Logger) error { return run(ctx, &c, specs, getenv, log) },
	}, args, getenv, stdout, stderr)
}

func run(ctx context.Context, c *Config, specs []*Spec, getenv func(string) string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	start := time.Now()
	for _, o := range c.Origins {
		if o.Overridden {
			log.Info("annotation overridden", "annotation", o.Setting, "value", o.Value, "by", o.From)
			continue
		}
		log.Debug("setting", "name", o.Setting, "value", o.Value, "from", o.From)
	}
	for _, w := range c.Warnings {
		log.Warn("ignoring annotation", "annotation", w.Annotation, "why", w.Why)
	}

	for _, dir := range []struct {
		path string
		perm os.FileMode
	}{{c.SecretsDir, 0o755}, {c.StateDir, 0o700}} {
		if err := os.MkdirAll(dir.path, dir.perm); err != nil {
			return fmt.Errorf("create %s: %w", dir.path, err)
		}
	}
	if err := state.PrepareDir(c.StateDir); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}

	removeStaleTemps(c, specs, log)

	client, err := vaultclient.New(c.VaultAddr, c.Namespace, min(c.Timeout, 15*time.Second), log)
	if err != nil {
		return err
	}
	pending := revokePending(ctx, client, c.StateDir, log)
	revokeEarlier(ctx, c.StateDir, c.SecretsDir, pending, log)
	var res *login.Result
	var sent time.Time // when the login Vault answered was sent: see secrets.Fetched.At
	err = vaultclient.Retry(ctx, log, "log in", func(ctx context.Context) error {
		var err error
		sent = time.Now()
		res, err = login.Login(ctx, client, c.Auth, getenv)
		return err
	})
	if err != nil {
		return fmt.Errorf("vault %s: %w", client.Address(), err)
	}
	res.Info.IssuedAt = sent.UTC().Truncate(time.Second)
	res.Info.ExpiresAt = sent.Add(time.Duration(res.Info.TTL) * time.Second).UTC().Truncate(time.Second)
	log.Info("logged in", "method", c.Auth.Method, "mount", c.Auth.Mount, "role", c.Auth.Role,
		"token_accessor", res.Info.Accessor, "token_ttl", time.Duration(res.Info.TTL)*time.Second, "policies", strings.Join(res.Info.Policies, ","))
	if res.Info.Batch() {
		log.Info("the token is a batch token: Vault cannot renew or revoke it, and every lease it creates ends with it; vault-renew logs in again and issues every leased credential anew before each token ends (a new database user every token TTL), and vault-revoke revokes the leases one by one",
			"token_ttl", time.Duration(res.Info.TTL)*time.Second)
	}
	client.SetToken(res.Token)
	if res.Info.Owned {
		if err := writePending(c.StateDir, res.Token); err != nil {
			revokeToken(client, log)
			return err
		}
	}

	st := &state.State{
		VaultAddr:  client.Address(),
		Namespace:  c.Namespace,
		Auth:       c.Auth,
		Token:      res.Info,
		SecretsDir: c.SecretsDir,
	}
	if err := issueAll(ctx, client, c, specs, st, res.Token, log); err != nil {
		// Keep the journal if the token outlives this run: the next run
		// revokes it. A batch token cannot be revoked: issueAll revoked
		// its leases one by one, and the token ends at its TTL. A token
		// the user gave is left alone, its leases revoked one by one.
		if res.Info.Owned && (res.Info.Batch() || revokeToken(client, log)) {
			removePending(c.StateDir, log)
		}
		return err
	}
	removePending(c.StateDir, log)
	for _, s := range st.Secrets {
		// A TTL of 0 is a token that never expires (a root token, say).
		if s.Kind == state.KindLeased && res.Info.TTL > 0 && s.LeaseDuration > res.Info.TTL && !res.Info.Renewable {
			log.Warn("the token expires before this lease and cannot be renewed: Vault will revoke the lease with it", "secret", s.Name, "lease_ttl", time.Duration(s.LeaseDuration)*time.Second, "token_ttl", time.Duration(res.Info.TTL)*time.Second)
		}
	}
	log.Info("vault-init done", "secrets", len(st.Secrets), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// issueAll reads every secret, renders every file in memory, then writes
// the files, the token and the state, removing what it wrote if a later
// write fails.
func issueAll(ctx context.Context, client *api.Client, c *Config, specs []*Spec, st *state.State, token string, log *slog.Logger) (err error) {
	fetched := map[string]*secrets.Fetched{}
	readPath := map[string]string{}
	if st.Token.Batch() || !st.Token.Owned {
		// A failure revokes each lease this run obtained when revoking
		// the token would not take them along: a batch token cannot be
		// revoked, and a token the user gave (--auth-method token) is
		// not ours to revoke.
		defer func() {
			if err != nil {
				revokeLeases(client, fetched, log)
			}
		}()
	}
	for _, sp := range specs {
		f, err := secrets.Fetch(ctx, client, log, sp.Path)
		if err != nil {
			var re *secrets.ReadError
			if errors.As(err, &re) && vaultclient.StatusCode(err) == 403 {
				re.Hint = policyHint(c.Auth, st.Token.Policies)
			}
			return fmt.Errorf("vault %s: %w", client.Address(), err)
		}
		fetched[sp.Path], readPath[sp.Path] = f, f.Path
		log.Info("read secret", "path", f.Path, "kind", f.Kind, "lease_id", f.Resp.LeaseID, "ttl", f.TTL(), "renewable", f.Resp.Renewable)
	}
	lookup := secrets.LookupFetched(fetched)
	list := secrets.Lister(ctx, client, log)
	type out struct {
		sec     state.Secret
		content []byte
	}
	var outs []out
	for _, sp := range specs {
		s := state.Secret{
			Name: sp.Name, Path: sp.Path,
			File: filepath.Join(c.SecretsDir, sp.Name), FileMode: sp.FileMode,
			Format: sp.Format, Template: sp.Text, TemplateFile: sp.TemplateFile,
		}
		if sp.Template != nil {
			s.Format = ""
		}
		if rp := readPath[sp.Path]; rp != sp.Path {
			s.ReadPath = rp
		}
		// Exit 1, not 2: Vault was contacted, and the caller revokes the
		// token and with it the leases just read.
		content, err := secrets.Render(&s, fetched[sp.Path], lookup, list)
		if err != nil {
			return err
		}
		if s.Format == render.Env {
			if fields := render.EnvEscapedFields(fetched[sp.Path].Fields); len(fields) > 0 {
				log.Warn("a field of this env-format secret holds a newline or another control character: it is written as an escape (\\n, \\r, \\xNN), which a shell that sources the file keeps as it is and a dotenv reader decodes only for \\n and \\r; use --format json or a --template for multi-line values",
					"secret", s.Name, "fields", strings.Join(fields, ","))
			}
			if fields := render.EnvDotenvFields(fetched[sp.Path].Fields); len(fields) > 0 {
				log.Warn("a field of this env-format secret cannot be written so that every dotenv reader reads it as it is: a shell that sources the file gets it right, but python-dotenv, godotenv or Node's dotenv may read it, or the lines after it, differently; if the app loads the file with a dotenv library, use --format json or a --template",
					"secret", s.Name, "fields", strings.Join(fields, ","))
			}
		}
		secrets.Record(&s, fetched[sp.Path])
		outs = append(outs, out{s, content})
	}

	var written []string
	cleanup := func() {
		for _, p := range written {
			os.Remove(p)
		}
	}
	for _, o := range outs {
		if err := secrets.WriteFile(&o.sec, o.content); err != nil {
			cleanup()
			return err
		}
		written = append(written, o.sec.File)
		st.Secrets = append(st.Secrets, o.sec)
		log.Info("wrote secret file", "secret", o.sec.Name, "file", o.sec.File, "mode", o.sec.FileMode)
	}
	unlock, err := state.Lock(ctx, c.StateDir)
	if err != nil {
		cleanup()
		return err
	}
	defer unlock()
	if err := state.WriteToken(c.StateDir, token); err != nil {
		cleanup()
		return err
	}
	written = append(written, filepath.Join(c.StateDir, state.TokenName))
	if err := state.Save(c.StateDir, st); err != nil {
		cleanup()
		return err
	}
	return nil
}

func policyHint(a state.Auth, policies []string) string {
	if a.Role != "" {
		return fmt.Sprintf("check the policy bound to role %q (token policies: %s)", a.Role, strings.Join(policies, ", "))
	}
	return fmt.Sprintf("check the token's policies (%s)", strings.Join(policies, ", "))
}

// revokeLeases revokes the leases of fetched one by one, bounded, for a
// token whose revocation would not take them along (a batch token, or
// one the user gave).
func revokeLeases(client *api.Client, fetched map[string]*secrets.Fetched, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for path, f := range fetched {
		if f.Resp.LeaseID == "" {
			continue
		}
		if err := client.Sys().RevokeWithContext(ctx, f.Resp.LeaseID); err != nil {
			log.Warn("could not revoke a lease after the failure; it ends at its TTL, or with the token", "path", path, "lease_id", f.Resp.LeaseID, "err", vaultclient.Cause(err))
			continue
		}
		log.Info("revoked a lease after the failure", "path", path, "lease_id", f.Resp.LeaseID)
	}
}

// revokeToken revokes the token vault-init just created, and with it every
// lease it obtained, so that a failed start leaves no live credential.
// It reports whether the token is gone.
func revokeToken(client *api.Client, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		log.Warn("could not revoke the token after the failure; the next run revokes it, or it and its leases expire at their TTL", "err", vaultclient.Cause(err))
		return false
	}
	log.Info("revoked the token and its leases after the failure")
	return true
}
