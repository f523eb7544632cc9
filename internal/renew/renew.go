// Package renew is vault-renew, podlease's sidecar. It keeps the pod's
// Vault token and every lease vault-init created alive for the pod's whole
// life: it renews them at a fraction of their TTL, replaces a credential
// (new lease, file rewritten atomically, old lease revoked after a grace
// period) before a max TTL ends it, logs in again before the token's max
// TTL and re-issues what the old token held, and rides out Vault outages
// on the same lease. One goroutine does all the Vault work, sleeping on a
// single timer until the next action is due.
//
// Where things happen: loop.go runs the one timer over the actions below;
// policy.go decides, as pure functions, when each is due and what a Vault
// error means; token.go renews the token (one request at start);
// relogin.go logs in again and re-issues every lease under the new token;
// oldtoken.go revokes a replaced token after the grace period; lease.go
// renews a lease, replaces it (rotate) or re-reads unleased data, and
// marks a credential lost; change.go reads and renders a new credential;
// commit.go writes it (token file, secret files, state.json); retire.go
// revokes a replaced lease after the grace period; journal.go keeps
// state.json and finishes a commit a crash interrupted; status.go, http.go
// and metrics.go serve /readyz and /metrics; notify.go tells the app;
// watch.go sees vault-revoke's mark at once; verify.go is
// --verify-interval; logs.go names Vault nodes and times in log lines.
package renew

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/atomicfile"
	"github.com/podlease/podlease/internal/cli"
	"github.com/podlease/podlease/internal/revocation"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

const name = "vault-renew"

const summary = `Keep the pod's Vault token and every lease vault-init created alive: renew
them before they expire, replace a credential (new lease, file rewritten
atomically, old lease revoked after --grace) before its max TTL ends, log
in again before the token's max TTL, and tell the app. Everything about
Vault comes from state.json in --state-dir.`

// deps are the parts of the outside world that tests replace.
type deps struct {
	newClient    func(addr, namespace string, timeout time.Duration, log *slog.Logger) (*api.Client, error)
	notifyClient *http.Client
	procRoot     string
	handler      func(http.Handler) // sees the HTTP handler, listening or not
	watch        bool               // watch state.json with inotify
	// setMemoryLimit applies --memory-limit (debug.SetMemoryLimit); nil
	// leaves the process's limit alone.
	setMemoryLimit func(int64) int64
	// settle gives free memory back to the kernel after a round of work
	// (debug.FreeOSMemory); nil: never.
	settle func()
}

// Run is vault-renew's main: it returns the process exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return run(ctx, args, getenv, stdout, stderr, deps{newClient: vaultclient.New, procRoot: "/proc", watch: true, setMemoryLimit: debug.SetMemoryLimit, settle: debug.FreeOSMemory})
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, d deps) int {
	var c Config
	return cli.Main(ctx, cli.Command{
		Name: name, Summary: summary, Flags: c.register,
		Validate: func(func(string) string) error { return c.Validate() },
		Run:      func(ctx context.Context, log *slog.Logger) error { return serve(ctx, &c, getenv, log, d) },
	}, args, getenv, stdout, stderr)
}

// serve runs the sidecar until ctx ends.
func serve(ctx context.Context, c *Config, getenv func(string) string, log *slog.Logger, d deps) error {
	if c.memoryLimit != 0 && d.setMemoryLimit != nil {
		d.setMemoryLimit(c.memoryLimit)
	}
	// One sidecar per state dir, for its whole life: a second one would
	// rotate the same leases and each would record leases the other
	// replaced.
	release, err := state.LockSidecar(c.StateDir)
	if err != nil {
		return err
	}
	defer release()
	st, err := state.Load(c.StateDir)
	if errors.Is(err, state.ErrNotExist) {
		return fmt.Errorf("%w: vault-init must run first, as an init container with the same --state-dir", err)
	}
	if err != nil {
		return err
	}
	if err := st.CheckSecretsDir(c.SecretsDir); err != nil {
		return err
	}
	// A sidecar killed while writing a secret file left a copy of a
	// credential beside it, in the directory the app reads; only this
	// one sidecar writes there now.
	for _, sec := range st.Secrets {
		for _, m := range atomicfile.RemoveStale(sec.File) {
			log.Info("removed a temporary file left by an interrupted earlier run", "file", m)
		}
	}
	names := make([]string, len(st.Secrets))
	for i, s := range st.Secrets {
		names[i] = s.Name
	}
	stat := &status{}
	m := newMetrics(names)
	h := handler(stat, m)
	if d.handler != nil {
		d.handler(h)
	}
	if c.Listen != "" {
		closeHTTP, err := serveHTTP(c.Listen, h, log)
		if err != nil {
			return err
		}
		defer closeHTTP()
	}
	if st.RevokedAt != nil {
		stat.setRevoked()
		log.Info("vault-revoke already ran for this state dir: nothing to renew; waiting for SIGTERM", "state_dir", c.StateDir, "revoked_at", st.RevokedAt)
		<-ctx.Done()
		return nil
	}
	if len(st.Pending) > 0 {
		if st, err = recoverPending(ctx, c.StateDir, c.Grace, log); err != nil {
			return err
		}
	}
	token, err := state.ReadToken(c.StateDir)
	if err != nil {
		return err
	}
	client, err := d.newClient(st.VaultAddr, st.Namespace, maxAttempt, log)
	if err != nil {
		return err
	}
	client.SetToken(token)
	hedge, err := vaultclient.SingleUse(client)
	if err != nil {
		return err
	}

	n := newNotifier(c, log, d.notifyClient, d.procRoot)
	s := newSidecar(c, st, initialToken(st.Token, token, client, time.Now()), getenv, log, n)
	s.status, s.metrics, s.hedge, s.settle = stat, m, hedge, d.settle
	defer context.AfterFunc(ctx, func() { s.stopBy.Store(time.Now().Add(c.RevokeTimeout).UnixNano()) })()
	if d.watch {
		wake, stopWatch := watchState(c.StateDir, log)
		defer stopWatch()
		s.wake = wake
	}
	s.publish()
	log.Info("vault-renew started", "vault_addr", st.VaultAddr, "token_id", s.tok.id, "batch_token", s.tok.batch, "secrets", len(st.Secrets), "retiring", len(st.Retiring))
	now := time.Now()
	for _, g := range s.groups {
		log.Info("managing secret", "secret", g.names(), "path", g.path, "kind", g.kind, "lease_id", g.leaseID(), "expires_in", until(now, g.expiry))
	}

	nctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { n.run(nctx) })
	defer func() {
		stop()
		wg.Wait()
	}()

	err = s.loop(ctx)
	switch {
	case errors.Is(err, errRevoked):
		s.stopRevoked()
		<-ctx.Done()
		return nil
	case err != nil:
		return err
	}
	if c.RevokeOnExit {
		s.revokeAll()
	}
	log.Info("vault-renew stopped")
	return nil
}

// exitClient is the client --revoke-on-exit revokes with: the token's,
// but opening a connection of its own for every request (a connection
// that a hung node holds cannot hold the revocation too; a load balancer
// may send the next one elsewhere), and cutting each request after a
// third of --revoke-timeout, so that one that gets no answer leaves time
// to send it again and to revoke the rest.
func (s *sidecar) exitClient() *api.Client {
	c, err := vaultclient.SingleUse(s.tok.client)
	if err != nil {
		return s.tok.client
	}
	c.SetToken(s.tok.token)
	c.SetClientTimeout(max(s.cfg.RevokeTimeout/3, time.Second))
	return c
}

// stopRevoked ends all work once vault-revoke ran: nothing is renewed,
// replaced or issued again. Old tokens only vault-renew knows are revoked
// so that nothing outlives the pod.
func (s *sidecar) stopRevoked() {
	s.publish()
	s.status.setRevoked()
	s.log.Info("vault-revoke ran: stopped renewing; /readyz answers 503 from now on; waiting for SIGTERM")
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	s.revokeOldTokens(ctx)
}

// revokeAll is --revoke-on-exit: what vault-revoke does (revoke every
// lease, retiring ones included, and the token; remove the files; mark the
// state revoked), for the state and token in memory, then the old tokens
// only vault-renew knows. The current token and leases come first: they
// hold the credentials the app used last, and an old token's revocation
// that gets no answer must not spend the time they need.
func (s *sidecar) revokeAll() {
	// --revoke-timeout counts from SIGTERM: a read or login that was under
	// way, and the revocation of what it issued, came out of it.
	deadline := time.Now().Add(s.cfg.RevokeTimeout)
	if stopBy := s.stopBy.Load(); stopBy != 0 {
		deadline = latest(time.Unix(0, stopBy), time.Now().Add(s.cfg.RevokeTimeout/3))
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	// What the sidecar holds, whatever the disk says: state.json may be
	// gone, renamed, corrupt, or behind the memory.
	if err := revocation.RevokeKnown(ctx, s.dir, s.cfg.SecretsDir, s.stateInMemory(), s.exitClient(), s.log); err != nil {
		s.log.Warn("--revoke-on-exit did not finish; what is left expires at its TTL", "err", err)
	} else {
		s.log.Info("revoked every credential on exit (--revoke-on-exit)")
	}
	s.revokeOldTokens(ctx)
}
