package vaultclient

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
