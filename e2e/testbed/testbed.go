// Package testbed runs the real parts the end-to-end tests need: a Vault dev
// server, a throwaway PostgreSQL cluster, and a stand-in for the two pieces
// of Kubernetes that podlease touches (projected service-account tokens and
// the TokenReview API), with Vault configured the way a user would.
//
// Start one Bed per test package in TestMain; tests that change Vault
// configuration use their own role names so they do not disturb others.
//
// Environment: PODLEASE_VAULT_BIN names the vault binary (see
// VaultBinary), PODLEASE_PG_BINDIR the PostgreSQL server binaries' directory,
// and a non-empty PODLEASE_KEEP_TESTBED keeps Dir (with the server logs)
// after Close.
package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Bed is a running test bed. Its fields are read-only.
type Bed struct {
	// Dir is the bed's temporary directory: server logs and the
	// PostgreSQL cluster. Close removes it unless PODLEASE_KEEP_TESTBED is
	// set.
	Dir string
	// VaultAddr is the Vault URL, as VAULT_ADDR wants it
	// ("http://127.0.0.1:PORT").
	VaultAddr string
	// VaultHostPort is the host:port Vault listens on, e.g. as a Proxy
	// target.
	VaultHostPort string
	// RootToken is the dev server's root token.
	RootToken string
	// PGAddr is the host:port PostgreSQL listens on.
	PGAddr string
	// TokenReviewURL is the base URL of the TokenReview API stand-in (the
	// kubernetes_host of auth/kubernetes).
	TokenReviewURL string
	// PublicKeyPEM verifies the service-account tokens the bed signs.
	PublicKeyPEM string
	// KVAPIKey is the random "api_key" field of KVPath.
	KVAPIKey string
	// VaultLog and PGLog are the server log files.
	VaultLog, PGLog string

	logf      func(string, ...any)
	pg        *pgServer
	vault     *vaultServer
	kube      *kube
	closeOnce sync.Once
}

// Start starts PostgreSQL, Vault and the Kubernetes stand-in, configures
// Vault, and returns once everything answers. logf (may be nil) gets a few
// progress lines, including where the server logs are. The caller must
// Close the bed; should the test binary die first, the servers die with it.
func Start(ctx context.Context, logf func(string, ...any)) (_ *Bed, err error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	began := time.Now()
	vaultBin, err := VaultBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "podlease-testbed-")
	if err != nil {
		return nil, err
	}
	// PostgreSQL runs as another OS user and must reach its own subdir.
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	b := &Bed{
		Dir:      dir,
		VaultLog: filepath.Join(dir, "vault.log"),
		PGLog:    filepath.Join(dir, "postgres.log"),
		KVAPIKey: randomHex(16),
		logf:     logf,
	}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	logf("testbed: vault log %s, postgres log %s", b.VaultLog, b.PGLog)

	if b.kube, err = newKube(); err != nil {
		return nil, err
	}
	b.TokenReviewURL = b.kube.srv.URL
	b.PublicKeyPEM = b.kube.pubPEM

	// PostgreSQL (initdb) and Vault start slowly and independently.
	var wg sync.WaitGroup
	var pgErr, vaultErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		b.pg, pgErr = startPostgres(ctx, dir)
	}()
	go func() {
		defer wg.Done()
		b.vault, vaultErr = startVault(ctx, vaultBin, dir)
	}()
	wg.Wait()
	if err := errors.Join(pgErr, vaultErr); err != nil {
		return nil, err
	}
	b.PGAddr = fmt.Sprintf("127.0.0.1:%d", b.pg.port)
	b.VaultAddr = b.vault.addr
	b.VaultHostPort = b.vault.host
	b.RootToken = b.vault.token

	if err := b.configure(ctx); err != nil {
		return nil, err
	}
	logf("testbed: ready in %s: vault %s, postgres %s, tokenreview %s",
		time.Since(began).Round(time.Millisecond), b.VaultAddr, b.PGAddr, b.TokenReviewURL)
	return b, nil
}

// Close stops every server and removes Dir. It is safe to call more than
// once.
func (b *Bed) Close() {
	b.closeOnce.Do(func() {
		b.vault.stop()
		b.pg.stop()
		b.kube.close()
		if os.Getenv("PODLEASE_KEEP_TESTBED") != "" {
			b.logf("testbed: kept %s", b.Dir)
			return
		}
		if err := os.RemoveAll(b.Dir); err != nil {
			b.logf("testbed: remove %s: %v", b.Dir, err)
		}
	})
}

// PGConnect connects to database PGDatabase as user with password.
func (b *Bed) PGConnect(ctx context.Context, user, password string) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, b.pg.config(user, password, PGDatabase))
}

// PGSuperuser connects to database PGDatabase as the cluster's superuser,
// for assertions such as whether a role still exists.
func (b *Bed) PGSuperuser(ctx context.Context) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, b.pg.config(pgSuperuser, b.pg.superPass, PGDatabase))
}

// randomHex returns n random bytes, hex encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// randomUUID returns a random (version 4) UUID.
func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// CloseOnSignal makes SIGINT and SIGTERM close the bed and exit the process
// with status 1, so an interrupted test run leaves no temporary directory
// behind (the servers would die with the process anyway). Call it from
// TestMain after Start.
func (b *Bed) CloseOnSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		b.logf("testbed: %v: closing", sig)
		b.Close()
		os.Exit(1)
	}()
}
