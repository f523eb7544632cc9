// Command vault-revoke revokes the leases and the token a pod's state directory records, then removes its credential files: a standalone, idempotent command, run by hand, as a Job's last step, or as a hook on clusters without native sidecars (where they exist, vault-renew --revoke-on-exit does the same at the pod's end).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/podlease/podlease/internal/revokecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := revokecmd.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
