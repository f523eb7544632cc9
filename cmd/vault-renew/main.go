// Command vault-renew is podlease's sidecar: it keeps the pod's token and leases alive and rotates credentials before they expire.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/podlease/podlease/internal/renew"
)

func main() {
	setMemoryDefaults(os.Getenv)
	time.AfterFunc(startupOver, releaseStartupPages)
	// SIGHUP's default would end the sidecar at once, with no
	// --revoke-on-exit and no log line; there is nothing to reload.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := renew.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
