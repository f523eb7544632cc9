// Command testbed starts the podlease test bed (a Vault dev server, a
// PostgreSQL cluster and the Kubernetes stand-ins, configured as the
// manifests configure a real cluster) and keeps it running until Ctrl-C,
// so vault-init, vault-renew and vault-revoke can be tried by hand.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	bed, err := testbed.Start(startCtx, func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	})
	if err != nil {
		return err
	}
	defer bed.Close()
	pod := filepath.Join(bed.Dir, "pod")
	for _, d := range []string{"sa", "secrets", "state"} {
		if err := os.MkdirAll(filepath.Join(pod, d), 0o755); err != nil {
			return err
		}
	}
	jwt := bed.WriteJWT(filepath.Join(pod, "sa"), testbed.Namespace, testbed.ServiceAccount)
	fmt.Printf(`
The test bed is up. In another shell, from the repository root:

  make build
  export VAULT_ADDR=%s
  bin/vault-init --role %s --jwt-file %s \
      --secret db=database/creds/%s --secret kv=%s --format kv=env \
      --secrets-dir %s --state-dir %s
  cat %s/db

PostgreSQL listens on %s (database "app"). Press Ctrl-C to stop and clean up.
`, bed.VaultAddr, testbed.Role, jwt, testbed.DBRole, testbed.KVPath,
		filepath.Join(pod, "secrets"), filepath.Join(pod, "state"), filepath.Join(pod, "secrets"), bed.PGAddr)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping the test bed")
	return nil
}
