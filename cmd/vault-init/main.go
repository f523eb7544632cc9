// Command vault-init is podlease's init container: it logs in to Vault and writes the pod's credentials.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/podlease/podlease/internal/initcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := initcmd.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
