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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := renew.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
