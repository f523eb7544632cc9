// Package floorkit is what the two floor programs (floor and floorhttp)
// share: their flags, writing the secret, and the idle HTTP server they
// keep running, so that they differ only in how they talk to Vault.
package floorkit

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Flags are a floor program's command line.
type Flags struct {
	Addr, Role, JWTFile, Path, Out, Serve string
}

// Main parses the flags, runs run with them and a 30-second context, and
// exits 1 with the error, prefixed by name, if it fails.
func Main(name string, run func(context.Context, Flags) error) {
	var f Flags
	flag.StringVar(&f.Addr, "vault-addr", "", "Vault address")
	flag.StringVar(&f.Role, "role", "", "kubernetes auth role")
	flag.StringVar(&f.JWTFile, "jwt-file", "", "service-account token file")
	flag.StringVar(&f.Path, "path", "", "secret path to read")
	flag.StringVar(&f.Out, "out", "", "file to write the secret's data to")
	flag.StringVar(&f.Serve, "serve", "", "after writing, answer /readyz on this address until SIGTERM")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := run(ctx, f)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Finish writes the secret's data to the -out file and, with -serve,
// answers /readyz until SIGTERM or SIGINT. ready answers it: whatever it
// references (the program's Vault client) stays in memory, as a
// sidecar's would.
func Finish(f Flags, data []byte, ready func() bool) error {
	if err := os.WriteFile(f.Out, data, 0o440); err != nil {
		return err
	}
	if f.Serve == "" {
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", f.Serve)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ready", ready())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
