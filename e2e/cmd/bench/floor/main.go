// Command floor is the benchmark's lower bound for a pod-start credential
// fetch: it logs in with Vault's kubernetes auth helper, reads one secret
// once and writes its data as JSON to a file. No retries, no state, no
// atomic write: whatever a real tool does on top of this is its overhead.
//
// With -serve ADDR it then stays up, answering /readyz on ADDR until
// SIGTERM, holding its Vault client: the resident memory of a Go program
// with the Vault client library and an idle HTTP server, the floor a
// sidecar's memory is compared with.
package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/podlease/podlease/e2e/cmd/bench/floorkit"
)

func main() { floorkit.Main("floor", run) }

func run(ctx context.Context, f floorkit.Flags) error {
	cfg := api.DefaultConfig()
	cfg.Address = f.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	k, err := kubernetes.NewKubernetesAuth(f.Role, kubernetes.WithServiceAccountTokenPath(f.JWTFile))
	if err != nil {
		return err
	}
	if _, err := c.Auth().Login(ctx, k); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	s, err := c.Logical().ReadWithContext(ctx, f.Path)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.Path, err)
	}
	if s == nil {
		return fmt.Errorf("read %s: no secret", f.Path)
	}
	b, err := json.Marshal(s.Data)
	if err != nil {
		return err
	}
	return floorkit.Finish(f, b, func() bool { return c.Address() != "" })
}
