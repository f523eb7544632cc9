// Command floorhttp is the floor program (cmd/bench/floor) without the
// Vault client library: it logs in with kubernetes auth and reads one
// secret with net/http and encoding/json alone, writes the secret's data
// to a file, and with -serve ADDR stays up answering /readyz, holding its
// HTTP client. Beside floor it shows what the Vault client library itself
// costs a Go sidecar in resident memory.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floorhttp:", err)
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
	jwt, err := os.ReadFile(*jwtFile)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 30 * time.Second}
	body, _ := json.Marshal(map[string]string{"role": *role, "jwt": strings.TrimSpace(string(jwt))})
	var login struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := call(ctx, c, http.MethodPost, *addr+"/v1/auth/kubernetes/login", "", body, &login); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	if login.Auth.ClientToken == "" {
		return errors.New("log in: no token in the answer")
	}
	var secret struct {
		Data json.RawMessage `json:"data"`
	}
	if err := call(ctx, c, http.MethodGet, *addr+"/v1/"+*path, login.Auth.ClientToken, nil, &secret); err != nil {
		return fmt.Errorf("read %s: %w", *path, err)
	}
	if err := os.WriteFile(*out, secret.Data, 0o440); err != nil {
		return err
	}
	if *serve == "" {
		return nil
	}
	return serveUntilTerm(*serve, c)
}

// call sends one Vault request and decodes its JSON answer into v.
func call(ctx context.Context, c *http.Client, method, url, token string, body []byte, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return json.Unmarshal(b, v)
}

// serveUntilTerm answers /readyz on addr until SIGTERM or SIGINT. c stays
// referenced, so the client and its idle connection stay in memory as a
// sidecar's would.
func serveUntilTerm(addr string, c *http.Client) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ready", c.Timeout > 0)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
