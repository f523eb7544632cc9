package testbed

import (
	"context"
	"path/filepath"
)

// DevVault is a Vault dev server of its own, empty but for what `vault
// server -dev` mounts, for tests that configure Vault themselves (the
// manifests tests run setup.sh against one). It is found and started as the
// bed's Vault is: VaultBinary, a free loopback port, the root token passed
// through the environment only, killed should the test binary die.
type DevVault struct {
	// Bin is the vault binary, for scripts that run the vault CLI.
	Bin string
	// Addr is the URL, as VAULT_ADDR wants it ("http://127.0.0.1:PORT").
	Addr string
	// RootToken is the dev server's root token.
	RootToken string
	// Log is the server's log file.
	Log string

	srv *vaultServer
}

// StartDevVault starts a dev server with its log and home under dir (which
// must exist) and returns once it is healthy. A missing vault binary is an
// error, never a reason to skip: run `make vault`. The caller must Close it.
func StartDevVault(ctx context.Context, dir string) (*DevVault, error) {
	bin, err := VaultBinary()
	if err != nil {
		return nil, err
	}
	srv, err := startVault(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	return &DevVault{Bin: bin, Addr: srv.addr, RootToken: srv.token, Log: filepath.Join(dir, "vault.log"), srv: srv}, nil
}

// Close stops the server. Its files stay in the directory given to
// StartDevVault.
func (v *DevVault) Close() { v.srv.stop() }

// LogTail returns the last n lines of the server's log, for a failed
// test's output.
func (v *DevVault) LogTail(n int) string { return tail(v.Log, n) }
