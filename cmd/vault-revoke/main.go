// Command vault-revoke is podlease's preStop hook: it revokes the pod's leases and token when the pod ends.
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
