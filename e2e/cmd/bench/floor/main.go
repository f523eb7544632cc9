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
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("vault-addr", "", "Vault address")
	role := flag.String("role", "", "kubernetes auth role")
	jwtFile := flag.String("jwt-file", "", "service-account token file")
	path := flag.String("path", "", "secret path to read")
	out := flag.String("out", "", "file to write the secret's data to")
	serve := flag.String("serve", "", "after writing, answer /readyz on this address until SIGTERM")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := api.DefaultConfig()
	cfg.Address = *addr
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	k, err := kubernetes.NewKubernetesAuth(*role, kubernetes.WithServiceAccountTokenPath(*jwtFile))
	if err != nil {
		return err
	}
	if _, err := c.Auth().Login(ctx, k); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	s, err := c.Logical().ReadWithContext(ctx, *path)
	if err != nil {
		return fmt.Errorf("read %s: %w", *path, err)
	}
	if s == nil {
		return fmt.Errorf("read %s: no secret", *path)
	}
	b, err := json.Marshal(s.Data)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, b, 0o440); err != nil {
		return err
	}
	if *serve == "" {
		return nil
	}
	return serveUntilTerm(*serve, c)
}

// serveUntilTerm answers /readyz on addr until SIGTERM or SIGINT. c stays
// referenced, so the client and its transport stay in memory as a
// sidecar's would.
func serveUntilTerm(addr string, c *api.Client) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ready", c.Address() != "")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
