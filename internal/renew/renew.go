// Package renew is vault-renew (not implemented yet).
package renew

import (
	"context"
	"fmt"
	"io"
)

// Run is vault-renew's main: it returns the process exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vault-renew: not implemented")
	return 2
}
