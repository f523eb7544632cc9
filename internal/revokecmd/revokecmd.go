// Package revokecmd is vault-revoke: when the pod ends, revoke every
// lease and the token recorded in the state directory, then remove the
// credential files (package revocation does the work). It is idempotent
// and bounded by --timeout, so it fits in a pod's termination grace period
// and a second run exits 0.
package revokecmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/podlease/podlease/internal/cli"
	"github.com/podlease/podlease/internal/revocation"
)

const name = "vault-revoke"

const summary = `Revoke every lease and the token that vault-init and vault-renew recorded in
--state-dir, then remove the secret files and the token file. Safe to run
twice; gives up after --timeout.`

// Config is vault-revoke's parsed command line.
type Config struct {
	StateDir   string
	SecretsDir string
	Timeout    time.Duration
}

func (c *Config) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.StateDir, "state-dir", "/vault/state", "directory holding the token and state.json")
	fs.StringVar(&c.SecretsDir, "secrets-dir", "/vault/secrets", "directory holding the secret files, as given to vault-init; the files removed are NAME in it, whatever state.json says")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "give up after this long (keep it well under the pod's termination grace period)")
}

// Validate checks the configuration; its errors name the flag to fix.
func (c *Config) Validate() error {
	if c.StateDir == "" {
		return errors.New("--state-dir must not be empty")
	}
	if c.SecretsDir == "" {
		return errors.New("--secrets-dir must not be empty")
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout %s: want a positive duration such as 10s", c.Timeout)
	}
	return nil
}

// Run is vault-revoke's main: it returns the process exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var c Config
	return cli.Main(ctx, cli.Command{
		Name: name, Summary: summary, Flags: c.register,
		Validate: func(func(string) string) error { return c.Validate() },
		Run: func(ctx context.Context, log *slog.Logger) error {
			ctx, cancel := context.WithTimeout(ctx, c.Timeout)
			defer cancel()
			return revocation.Revoke(ctx, c.StateDir, c.SecretsDir, log)
		},
	}, args, getenv, stdout, stderr)
}
