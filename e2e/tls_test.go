package e2e

// TLS: the binaries talk to Vault behind a TLS-terminating proxy whose
// certificate a test CA signed, configured only through the standard
// VAULT_* variables.

import (
	"crypto/tls"
	"io"
	"log"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// testCA is a certificate authority for one test, its certificate written
// to pemFile.
type testCA struct {
	*testbed.CA
	pemFile string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	ca, err := testbed.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(f, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{CA: ca, pemFile: f}
}

// serverCert issues a certificate for 127.0.0.1 and the given DNS names.
func (ca *testCA) serverCert(t *testing.T, dns ...string) tls.Certificate {
	t.Helper()
	der, key, err := ca.Issue("vault", nil, append([]string{"127.0.0.1"}, dns...)...)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsVault starts a TLS-terminating reverse proxy to the bed's Vault with
// a certificate from ca, and returns its https:// address.
func tlsVault(t *testing.T, ca *testCA) string {
	t.Helper()
	target, _ := url.Parse(bed.VaultAddr)
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t, "vault.test")}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTLS: with VAULT_CACERT the whole pod lifecycle works over TLS; a
// certificate the client cannot trust, a name that does not match and a
// plain-HTTP server are refused at once with a message that names the
// problem and the variable to fix; VAULT_SKIP_VERIFY works but warns.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "podlease-test-ca")
	other := newTestCA(t, dir, "some-other-ca")
	addr := tlsVault(t, ca)

	type tlsCase struct {
		name     string
		addr     string
		env      []string
		code     int
		mentions []string
	}
	cases := []tlsCase{
		{name: "VAULT_CACERT", addr: addr, env: []string{"VAULT_CACERT=" + ca.pemFile}},
		{name: "VAULT_CAPATH", addr: addr, env: []string{"VAULT_CAPATH=" + dir}},
		{name: "VAULT_TLS_SERVER_NAME matching", addr: strings.Replace(addr, "127.0.0.1", "localhost", 1), env: []string{"VAULT_CACERT=" + ca.pemFile, "VAULT_TLS_SERVER_NAME=vault.test"}},
		{name: "VAULT_SKIP_VERIFY", addr: addr, env: []string{"VAULT_SKIP_VERIFY=true"}, mentions: []string{"level=WARN", "VAULT_SKIP_VERIFY", "use VAULT_CACERT instead"}},
		{name: "no CA", addr: addr, code: 1, mentions: []string{"certificate is not signed by a trusted CA", "set VAULT_CACERT"}},
		{name: "wrong CA", addr: addr, env: []string{"VAULT_CACERT=" + other.pemFile}, code: 1, mentions: []string{"certificate is not signed by a trusted CA", "set VAULT_CACERT"}},
		{name: "wrong VAULT_TLS_SERVER_NAME", addr: addr, env: []string{"VAULT_CACERT=" + ca.pemFile, "VAULT_TLS_SERVER_NAME=wrong.test"}, code: 1, mentions: []string{"does not match", "not wrong.test", "VAULT_TLS_SERVER_NAME"}},
		{name: "https to a plain-HTTP Vault", addr: strings.Replace(bed.VaultAddr, "http://", "https://", 1), env: []string{"VAULT_CACERT=" + ca.pemFile}, code: 1, mentions: []string{"answers plain HTTP", "use http://"}},
		// A usage error: found before anything is written or Vault is asked.
		{name: "missing VAULT_CACERT file", addr: addr, env: []string{"VAULT_CACERT=" + filepath.Join(dir, "nope.pem")}, code: 2, mentions: []string{"VAULT_CACERT=", "nope.pem"}},
	}
	var clean atomic.Int32
	concurrently(t, cases, func(c tlsCase) string { return c.name }, func(t *testing.T, c tlsCase) {
		p := newPod(t)
		env := append([]string{"VAULT_ADDR=" + c.addr}, c.env...)
		r := runWith(t, "vault-init", p.initArgs("--secret", "db=database/creds/app", "--timeout", "20s"), runOpts{env: env})
		if r.code != c.code {
			t.Fatalf("exit %d, want %d:\n%s", r.code, c.code, r.stderr)
		}
		if m := mentionsAll(r.stderr, c.mentions...); len(m) > 0 {
			t.Errorf("stderr lacks %q:\n%s", m, r.stderr)
		}
		if c.code != 0 {
			if r.elapsed > 3*time.Second {
				t.Errorf("took %s with --timeout 20s: a TLS misconfiguration must fail at once, not be retried", r.elapsed.Round(time.Millisecond))
			}
			if strings.Contains(r.stderr, "retrying") {
				t.Errorf("a TLS misconfiguration was retried:\n%s", r.stderr)
			}
			assertNothingLeft(t, p)
		} else {
			noteSecret(p.token())
			assertCompleteSet(t, p)
			user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
			if err := pgLogin(user, pass); err != nil {
				t.Errorf("credential fetched over TLS does not log in: %v", err)
			}
			if c.name == "VAULT_CACERT" {
				tlsLifecycle(t, p, env)
			}
		}
		if !t.Failed() {
			clean.Add(1)
		}
	})
	figure(t, "tls", "Vault behind TLS: %d/%d cases right (CA file, CA dir, server name and skip-verify with a warning succeed; unknown CA, wrong CA, wrong name, plain HTTP and a missing CA file refused at once, naming the problem)", clean.Load(), len(cases))
}

// tlsLifecycle runs vault-renew (which reads the CA from the same
// environment) and vault-revoke against the TLS address.
func tlsLifecycle(t *testing.T, p *pod, env []string) {
	t.Helper()
	s := start(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--log-level", "debug"}, env...)
	waitStartAnswered(t, s)
	if d := s.stop(10 * time.Second); d > 5*time.Second {
		t.Errorf("vault-renew took %s to stop", d)
	}
	out := s.stderr.String()
	if strings.Contains(out, "level=ERROR") || strings.Contains(out, "level=WARN") || !strings.Contains(out, "vault-renew started") {
		t.Errorf("vault-renew over TLS:\n%s", out)
	}
	r := runWith(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, runOpts{env: env})
	if r.code != 0 || !strings.Contains(r.stderr, "revoked lease") {
		t.Errorf("vault-revoke over TLS: exit %d\n%s", r.code, r.stderr)
	}
}
