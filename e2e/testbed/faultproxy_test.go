package testbed

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestFaultProxy checks each fault against a stand-in server: what the
// client sees, and whether the request reached the server.
func TestFaultProxy(t *testing.T) {
	t.Parallel()
	var reached atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(backend.Close)
	for _, tc := range []struct {
		rule    Rule
		path    string
		status  int    // 0: the request fails
		errText string // in the client's error
		reaches bool
		atLeast time.Duration
	}{
		{rule: Rule{}, status: 200, reaches: true},
		{rule: Rule{Fault: Refuse}, errText: "connection refused"},
		{rule: Rule{Fault: Reset}, errText: "connection reset"},
		{rule: Rule{Fault: Drop}, errText: "connection reset", reaches: true},
		{rule: Rule{Fault: Hang}, errText: "Client.Timeout"},
		{rule: Rule{Fault: Silent}, errText: "Client.Timeout"},
		{rule: Rule{Fault: Status500}, status: 500},
		{rule: Rule{Fault: Status429}, status: 429},
		{rule: Rule{Fault: Slow, Delay: 300 * time.Millisecond}, status: 200, reaches: true, atLeast: 300 * time.Millisecond},
		// Go's client follows both redirects: the second ends at the
		// server.
		{rule: Rule{Fault: RedirectTwice}, status: 200, reaches: true},
		{rule: Rule{Fault: Status500, PathPrefix: "/v1/other/"}, path: "/v1/sys/health", status: 200, reaches: true},
	} {
		t.Run(tc.rule.Fault.String()+tc.rule.PathPrefix, func(t *testing.T) {
			fp, err := NewFaultProxy(strings.TrimPrefix(backend.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer fp.Close()
			if err := fp.Set(tc.rule); err != nil {
				t.Fatal(err)
			}
			before := reached.Load()
			c := &http.Client{Timeout: time.Second}
			start := time.Now()
			path := "/v1/x"
			if tc.path != "" {
				path = tc.path
			}
			resp, err := c.Get(fp.URL() + path)
			elapsed := time.Since(start)
			if tc.status == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("status %d, want an error with %q", resp.StatusCode, tc.errText)
				}
				if !strings.Contains(err.Error(), tc.errText) && !(tc.errText == "connection reset" && errors.Is(err, syscall.ECONNRESET)) {
					t.Errorf("error %q, want %q", err, tc.errText)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
				}
			}
			if got := reached.Load() > before; got != tc.reaches {
				t.Errorf("request reached the server: %v, want %v", got, tc.reaches)
			}
			if elapsed < tc.atLeast {
				t.Errorf("answered after %s, want at least %s", elapsed, tc.atLeast)
			}
		})
	}
}

// TestFaultProxySilentThenClear: requests held in silence are answered
// once the fault ends, and Refuse then Clear listens again on the same
// address.
func TestFaultProxySilentThenClear(t *testing.T) {
	t.Parallel()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(backend.Close)
	fp, err := NewFaultProxy(strings.TrimPrefix(backend.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.Close)
	if err := fp.SetFor(Rule{Fault: Silent}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fp.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); d < 300*time.Millisecond || resp.StatusCode != 200 {
		t.Errorf("status %d after %s: want 200 once the silence ended", resp.StatusCode, d)
	}
	if err := fp.Set(Rule{Fault: Refuse}); err != nil {
		t.Fatal(err)
	}
	if err := fp.Clear(); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(fp.URL())
	if err != nil {
		t.Fatalf("after Refuse and Clear: %v", err)
	}
	resp.Body.Close()
	if hits := fp.Hits(); hits[Silent] != 1 || hits[Pass] < 2 {
		t.Errorf("hits %v", hits)
	}
}
