package renew

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/state"
)

func TestRunServesHTTPAndExitsPromptly(t *testing.T) {
	t.Parallel()
	f, url := realFixture(t, "--revoke-on-exit")
	st := f.state()
	code, body := httpGet(url + "/metrics")
	if code != 200 || !regexp.MustCompile(`(?m)^podlease_secret_expiry_timestamp_seconds\{secret="db"\} \d{10}`).MatchString(body) {
		t.Errorf("/metrics over HTTP = %d, lacking the db expiry:\n%s", code, body)
	}
	if code, body := httpGet(url + "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}

	f.exitsPromptly()
	if f.v.alive(st.Secrets[0].LeaseID) || f.v.tokenAlive(st.Token.Accessor) {
		t.Error("--revoke-on-exit left the lease or the token alive")
	}
	if _, err := os.Stat(filepath.Join(f.secretsDir, "db")); !os.IsNotExist(err) {
		t.Errorf("--revoke-on-exit left the secret file: %v", err)
	}
	if after, err := state.Load(f.stateDir); err != nil || after.RevokedAt == nil {
		t.Errorf("state.json not marked revoked (%v)", err)
	}
	if code, _ := httpGet(url + "/healthz"); code != 0 {
		t.Error("the HTTP server still answers after exit")
	}
}

func TestHTTPBoundsWhatClientsCanHold(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	closeHTTP, err := serveHTTP(addr, handler(&status{}, &metrics{}), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeHTTP()

	req, _ := http.NewRequest("GET", "http://"+addr+"/healthz", nil)
	req.Header.Set("X-Filler", strings.Repeat("a", 2*maxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a request with %d bytes of headers: %d, want 431", 2*maxHeaderBytes, resp.StatusCode)
	}

	// Every connection the server takes, held by a client that never
	// finishes its headers: the next client waits until the server drops
	// them, which it does after headerTimeout.
	stalled := make([]net.Conn, maxConns)
	for i := range stalled {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")); err != nil {
			t.Fatal(err)
		}
		stalled[i] = c
	}
	time.Sleep(100 * time.Millisecond) // let the server accept them all
	start := time.Now()
	client := &http.Client{Timeout: 10 * time.Second}
	code, err := func() (int, error) {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}()
	waited := time.Since(start)
	if err != nil || code != 200 {
		t.Fatalf("a probe after %d stalled clients: %d, %v (want 200 once they are dropped)", maxConns, code, err)
	}
	if waited < headerTimeout/2 {
		t.Errorf("a probe was answered after %s beside %d stalled clients: the server took more than %d connections", waited, maxConns, maxConns)
	}
	for i, c := range stalled {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("stalled client %d: not dropped by the server: %v", i, err)
		}
	}
}
