// Package revoke is vault-revoke (not implemented yet).
package revoke

import (
	"context"
	"fmt"
	"io"
)

// Run is vault-revoke's main: it returns the process exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vault-revoke: not implemented")
	return 2
}
