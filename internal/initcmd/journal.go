package initcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/atomicfile"
	"github.com/podlease/podlease/internal/revocation"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// pendingName is the journal of a run in progress: the token vault-init
// obtained, written to the state dir before any credential is asked for
// and removed once state.json records the token, or once the token is
// revoked after a failure. A run killed in between (OOM, node drain,
// kill -9) leaves it behind, and the next run revokes that token, and
// with it every lease the killed run obtained and nobody else knows of.
const pendingName = state.PendingName

// writePending records token as the token of the run in progress. Failing
// here, before any lease exists, is also the cheapest way to find out that
// the state dir cannot be written.
func writePending(dir, token string) error {
	if err := atomicfile.Write(filepath.Join(dir, pendingName), []byte(token), 0o600); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	return nil
}

func removePending(dir string, log *slog.Logger) {
	if err := os.Remove(filepath.Join(dir, pendingName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("cannot remove the journal of this run; the next run will revoke the token it names", "file", filepath.Join(dir, pendingName), "err", err)
	}
}

// revokePending revokes the token of an earlier run that was killed
// before it finished, if there is one, removes its journal, and returns
// that token ("" if none).
func revokePending(ctx context.Context, client *api.Client, dir string, log *slog.Logger) string {
	path := filepath.Join(dir, pendingName)
	b, err := state.ReadFile(dir, pendingName)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		log.Warn("cannot read the journal of an interrupted earlier run; its token and leases expire at their TTL", "file", path, "err", err)
		removePending(dir, log)
		return ""
	}
	tok := strings.TrimSpace(string(b))
	if tok != "" {
		c := client.WithNamespace(client.Namespace()) // a shallow clone we may set a token on
		c.SetToken(tok)
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = c.Auth().Token().RevokeSelfWithContext(rctx, "")
		cancel()
		switch code := vaultclient.StatusCode(err); {
		case err == nil:
			log.Info("revoked the token of an interrupted earlier run, and with it every lease that run obtained", "file", path)
		case code == 401 || code == 403:
			log.Info("the token of an interrupted earlier run is already invalid (expired or revoked)", "file", path)
		default:
			log.Warn("cannot revoke the token of an interrupted earlier run; it and its leases expire at their TTL", "file", path, "err", vaultclient.Cause(err))
		}
	}
	removePending(dir, log)
	return tok
}

// removeStaleTemps removes the temporary files an interrupted earlier run
// may have left while writing the files this run writes (atomicfile names
// them ".NAME.tmp-RANDOM"): a secret file's copy must not linger in the
// directory the app reads.
func removeStaleTemps(c *Config, specs []*Spec, log *slog.Logger) {
	var paths []string
	for _, sp := range specs {
		paths = append(paths, filepath.Join(c.SecretsDir, sp.Name))
	}
	for _, n := range []string{state.TokenName, state.FileName, pendingName} {
		paths = append(paths, filepath.Join(c.StateDir, n))
	}
	for _, p := range paths {
		for _, m := range atomicfile.RemoveStale(p) {
			log.Info("removed a temporary file left by an interrupted earlier run", "file", m)
		}
	}
}

// revokeEarlier revokes what a completed earlier run in the same state dir
// left (the kubelet runs init containers again when a pod restarts, or
// when vault-init was killed after it wrote its state but before it
// exited): one pod holds one token, and replaced leases would otherwise
// stay valid until their TTL with nobody renewing or revoking them. It is
// vault-revoke's work, bounded so that a Vault outage leaves this run time
// to retry its own.
//
// pending is the token revokePending just revoked: when the earlier run was
// killed after it wrote its state but before it removed its journal, its
// leases are going with that token already, and revoking them once more
// would race Vault's own revocation of the same database users.
func revokeEarlier(ctx context.Context, dir, secretsDir, pending string, log *slog.Logger) {
	if _, err := os.Stat(filepath.Join(dir, state.FileName)); err != nil {
		return
	}
	if tok, err := state.ReadToken(dir); err == nil && pending != "" && tok == pending {
		log.Info("the state dir holds the state of the interrupted earlier run, whose token was just revoked", "state_dir", dir)
		return
	}
	log.Info("the state dir holds the state of an earlier run: revoking its leases and token before replacing it", "state_dir", dir)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := revocation.Revoke(rctx, dir, secretsDir, log.With("earlier_run", true)); err != nil {
		log.Warn("could not revoke what the earlier run left; replacing its state anyway (what was not revoked expires at its TTL)", "err", err)
	}
}
