package vaultclient

import (
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestTLSErrorsArePermanent: a certificate the client does not trust, or
// a plain-HTTP server behind an https:// address, is not retried and is
// explained with the variable to fix.
func TestTLSErrorsArePermanent(t *testing.T) {
	t.Parallel()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsSrv.Close)
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	for _, tc := range []struct {
		name, url string
		client    *http.Client
		want      []string
	}{
		{"unknown CA", tlsSrv.URL, &http.Client{}, []string{"not signed by a trusted CA", "VAULT_CACERT"}},
		{"wrong name", tlsSrv.URL, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "wrong.test"}}}, []string{"does not match", "wrong.test", "VAULT_TLS_SERVER_NAME"}},
		{"plain HTTP", strings.Replace(plain.URL, "http://", "https://", 1), &http.Client{}, []string{"answers plain HTTP", "http://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := tc.client.Get(tc.url)
			if err == nil {
				resp.Body.Close()
				t.Fatal("no error")
			}
			if Transient(err) {
				t.Errorf("Transient(%v) = true: a TLS misconfiguration does not heal by itself", err)
			}
			cause := Cause(err)
			for _, w := range tc.want {
				if !strings.Contains(cause, w) {
					t.Errorf("Cause = %q, want it to mention %q", cause, w)
				}
			}
		})
	}
}

// TestSingleUse: New's client keeps one HTTP/2 connection to a TLS Vault;
// SingleUse's opens a connection of its own for every request, over
// HTTP/1.1, closes it after, and carries the namespace but not the token.
func TestSingleUse(t *testing.T) {
	type seen struct{ proto, remote, token, namespace string }
	var mu sync.Mutex
	var got []seen
	closed := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Proto, r.RemoteAddr, r.Header.Get("X-Vault-Token"), r.Header.Get("X-Vault-Namespace")})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{}}`))
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			mu.Lock()
			closed++
			mu.Unlock()
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_CACERT", ca)
	c, err := New(srv.URL, "team-a", 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("pooled-token")
	su, err := SingleUse(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*api.Client{c, c, su, su} {
		if _, err := cl.Logical().Read("secret/x"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got[0].proto != "HTTP/2.0" || got[1].remote != got[0].remote {
		t.Errorf("New's client: %+v %+v; want one HTTP/2 connection for both", got[0], got[1])
	}
	for _, s := range got[2:] {
		if s.proto != "HTTP/1.1" || s.remote == got[0].remote || s.token != "" || s.namespace != "team-a" {
			t.Errorf("SingleUse's request %+v; want HTTP/1.1 on a connection of its own, no token, namespace team-a", s)
		}
	}
	if got[2].remote == got[3].remote {
		t.Errorf("SingleUse's two requests shared connection %s", got[2].remote)
	}
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := closed
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if closed < 2 {
		t.Errorf("%d connections closed after SingleUse's requests; want both", closed)
	}
}
