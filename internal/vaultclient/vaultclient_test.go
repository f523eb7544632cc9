package vaultclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/vault/api"
)

func vaultErr(code int, msgs ...string) error {
	return &api.ResponseError{HTTPMethod: "GET", URL: "http://vault/v1/x", StatusCode: code, Errors: msgs}
}

var refused = &url.Error{Op: "Get", URL: "http://127.0.0.1:1/v1/x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}

func TestTransient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"500", vaultErr(500, "internal error"), true},
		{"502", vaultErr(502), true},
		{"503 sealed", vaultErr(503, "Vault is sealed"), true},
		{"429", vaultErr(429, "rate limited"), true},
		{"412 not yet replicated", vaultErr(412), true},
		{"400", vaultErr(400, "invalid role"), false},
		{"400 from a node that lost leadership", vaultErr(400, "failed to delete lease entry: node is not the leader"), true},
		{"400 leadership lost mid-write", vaultErr(400, "failed to persist entry: leadership lost while committing log"), true},
		{"500 no active node", vaultErr(500, "local node not active but active cluster node not found"), true},
		{"400 the database failed a renewal", vaultErr(400, "failed to renew entry: resp: (*logical.Response)(nil) err: dial tcp 127.0.0.1:5432: connect: connection refused"), true},
		{"400 the database failed a revocation", vaultErr(400, "failed to revoke entry: resp: (*logical.Response)(nil) err: ERROR: tuple concurrently updated (SQLSTATE XX000)"), true},
		{"401", vaultErr(401), false},
		{"403", vaultErr(403, "permission denied"), false},
		{"404", vaultErr(404), false},
		{"405", vaultErr(405), false},
		{"wrapped 503", fmt.Errorf("read x: %w", vaultErr(503)), true},
		{"wrapped 403", fmt.Errorf("read x: %w", vaultErr(403)), false},
		{"connection refused", refused, true},
		{"bare net error", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, true},
		{"dns", &url.Error{Op: "Get", URL: "http://vault:8200", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "vault", IsNotFound: true}}}, true},
		{"missing credential file", &os.PathError{Op: "open", Path: "/var/run/secrets/token", Err: syscall.ENOENT}, false},
		{"bare errno", syscall.EACCES, false},
		{"deadline", context.DeadlineExceeded, true},
		{"request timeout", &url.Error{Op: "Get", URL: "http://x", Err: context.DeadlineExceeded}, true},
		{"cancelled", context.Canceled, false},
		{"request cancelled", &url.Error{Op: "Get", URL: "http://x", Err: context.Canceled}, false},
		{"plain error", errors.New("bad flag"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Transient(tc.err); got != tc.want {
				t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestTransientRealErrors classifies what a real client gets from a closed
// port, a slow server and Vault's error responses.
func TestTransientRealErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/v1/denied":
			w.WriteHeader(403)
			io.WriteString(w, `{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`)
		case "/v1/sealed":
			w.WriteHeader(503)
			io.WriteString(w, `{"errors":["Vault is sealed"]}`)
		}
	}))
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name, addr, path string
		timeout          time.Duration
		want             bool
		wantCause        string
	}{
		{"connection refused", closed, "x", time.Second, true, "connection refused"},
		{"request timeout", srv.URL, "slow", 200 * time.Millisecond, true, ""},
		{"403", srv.URL, "denied", time.Second, false, "permission denied (HTTP 403)"},
		{"503", srv.URL, "sealed", time.Second, true, "Vault is sealed (HTTP 503)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(tc.addr, "", tc.timeout, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.SetToken("hvs.must-not-show")
			_, err = c.Logical().Read(tc.path)
			if err == nil {
				t.Fatal("no error")
			}
			if got := Transient(err); got != tc.want {
				t.Errorf("Transient(%v) = %v, want %v", err, got, tc.want)
			}
			cause := Cause(err)
			if tc.wantCause != "" && !strings.Contains(cause, tc.wantCause) {
				t.Errorf("Cause = %q, want it to contain %q", cause, tc.wantCause)
			}
			if strings.ContainsAny(cause, "\n\t") {
				t.Errorf("Cause %q spans lines: one log line per error", cause)
			}
			if strings.Contains(cause, "hvs.must-not-show") {
				t.Errorf("Cause %q shows the token", cause)
			}
		})
	}
}

func TestCause(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"vault message", vaultErr(403, "permission denied"), "permission denied (HTTP 403)"},
		{"several messages", vaultErr(400, "invalid role", "missing jwt"), "invalid role; missing jwt (HTTP 400)"},
		{"no message", vaultErr(503), "Service Unavailable (HTTP 503)"},
		{"multierror flattened", vaultErr(403, "1 error occurred:\n\t* permission denied\n\n"), "permission denied (HTTP 403)"},
		{"multierror of two", vaultErr(400, "2 errors occurred:\n\t* invalid role\n\t* missing jwt\n\n"), "invalid role; missing jwt (HTTP 400)"},
		{"other line breaks", vaultErr(500, "internal error:\n\tdetail"), "internal error: detail (HTTP 500)"},
		{"wrapped", fmt.Errorf("ctx: %w", vaultErr(404, "not found")), "not found (HTTP 404)"},
		{"network drops the URL", refused, "dial tcp: connection refused"},
		{"other", errors.New("boom"), "boom"},
		{"a proxy's page", &api.ResponseError{StatusCode: 502, RawError: true, Errors: []string{"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n" + strings.Repeat("<!-- padding -->\n", 50) + "</body>\n</html>\n"}},
			`"502 Bad Gateway 502 Bad Gateway nginx" (HTTP 502, not an answer from Vault: a proxy or load balancer in the way?)`},
		{"a long plain text", &api.ResponseError{StatusCode: 500, RawError: true, Errors: []string{strings.Repeat("x", 200)}},
			`"` + strings.Repeat("x", 120) + `…" (HTTP 500, not an answer from Vault: a proxy or load balancer in the way?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Cause(tc.err); got != tc.want {
				t.Errorf("Cause = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStatusCode(t *testing.T) {
	t.Parallel()
	if got := StatusCode(fmt.Errorf("x: %w", vaultErr(403))); got != 403 {
		t.Errorf("StatusCode = %d, want 403", got)
	}
	if got := StatusCode(refused); got != 0 {
		t.Errorf("StatusCode(network error) = %d, want 0", got)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestRetry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		timeout   time.Duration
		errs      []error // returned in turn; the last one repeats
		wantCalls int     // 0: at least 2
		wantErr   func(t *testing.T, err error)
	}{
		{
			name: "success", timeout: 5 * time.Second, errs: []error{nil}, wantCalls: 1,
		},
		{
			name: "permanent fails at once", timeout: 5 * time.Second, errs: []error{vaultErr(403, "permission denied")}, wantCalls: 1,
			wantErr: func(t *testing.T, err error) {
				var ge *GaveUpError
				if StatusCode(err) != 403 || errors.As(err, &ge) {
					t.Errorf("err = %v, want the 403 itself", err)
				}
			},
		},
		{
			name: "400 fails at once", timeout: 5 * time.Second, errs: []error{vaultErr(400, "invalid role")}, wantCalls: 1,
			wantErr: func(t *testing.T, err error) {
				if StatusCode(err) != 400 {
					t.Errorf("err = %v, want the 400", err)
				}
			},
		},
		{
			name: "transient then success", timeout: 10 * time.Second, errs: []error{vaultErr(500), refused, vaultErr(429), nil}, wantCalls: 4,
		},
		{
			name: "transient then permanent", timeout: 10 * time.Second, errs: []error{vaultErr(503), vaultErr(404)}, wantCalls: 2,
			wantErr: func(t *testing.T, err error) {
				if StatusCode(err) != 404 {
					t.Errorf("err = %v, want the 404", err)
				}
			},
		},
		{
			name: "gives up at the deadline", timeout: 700 * time.Millisecond, errs: []error{vaultErr(503, "Vault is sealed")},
			wantErr: func(t *testing.T, err error) {
				var ge *GaveUpError
				if !errors.As(err, &ge) || ge.Op != "read database/creds/app" {
					t.Fatalf("err = %#v, want a GaveUpError for the op", err)
				}
				if msg := err.Error(); !strings.HasPrefix(msg, "read database/creds/app: timed out") || !strings.HasSuffix(msg, ": Vault is sealed (HTTP 503)") {
					t.Errorf("err = %q, want it to name the op, the timeout and Vault's last answer", msg)
				}
				if !errors.Is(err, context.DeadlineExceeded) || StatusCode(err) != 503 {
					t.Errorf("err does not unwrap to the deadline and the last Vault error")
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			var calls int
			start := time.Now()
			err := Retry(ctx, discard(), "read database/creds/app", func(context.Context) error {
				e := tc.errs[min(calls, len(tc.errs)-1)]
				calls++
				return e
			})
			if tc.wantErr == nil && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("no error")
				}
				tc.wantErr(t, err)
			}
			if tc.wantCalls > 0 && calls != tc.wantCalls {
				t.Errorf("op called %d times, want %d", calls, tc.wantCalls)
			}
			if tc.wantCalls == 0 && calls < 2 {
				t.Errorf("op called %d times, want retries", calls)
			}
			if d := time.Since(start); d > tc.timeout+500*time.Millisecond {
				t.Errorf("took %v, past the %v deadline", d, tc.timeout)
			}
		})
	}
}

// An attempt cut short by the deadline must not hide the error that
// explains the outage.
func TestRetryKeepsTheCause(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var calls int
	err := Retry(ctx, discard(), "log in", func(ctx context.Context) error {
		calls++
		if calls == 1 {
			return refused
		}
		<-ctx.Done()
		return &url.Error{Op: "Put", URL: "http://x", Err: ctx.Err()}
	})
	if err == nil || !strings.Contains(err.Error(), "log in: timed out") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %v, want it to name the op and the refused connection", err)
	}
}

func TestRetryInterrupted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var calls int
	err := Retry(ctx, discard(), "log in", func(context.Context) error {
		calls++
		if calls == 2 {
			cancel()
		}
		return vaultErr(502)
	})
	var ge *GaveUpError
	if !errors.As(err, &ge) || !strings.Contains(err.Error(), "log in: interrupted") {
		t.Errorf("err = %v, want an interrupted GaveUpError", err)
	}
}

// TestRetryInterruptedInFlight: a signal during a request says
// "interrupted", not that Vault kept failing with "context canceled".
func TestRetryInterruptedInFlight(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	err := Retry(ctx, discard(), "log in", func(ctx context.Context) error {
		cancel()
		<-ctx.Done()
		return &url.Error{Op: "Put", URL: "http://x", Err: ctx.Err()}
	})
	if err == nil || err.Error() != "log in: interrupted during attempt 1" {
		t.Errorf("err = %v, want \"log in: interrupted during attempt 1\"", err)
	}
}

// TestRetryLogsEachRetry: each retry is a warning, or under
// WithQuietRetries a debug line.
func TestRetryLogsEachRetry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		level slog.Level
		lines int
	}{
		{"warnings", context.Background(), slog.LevelInfo, 2},
		{"quiet", WithQuietRetries(context.Background()), slog.LevelInfo, 0},
		{"quiet, at debug level", WithQuietRetries(context.Background()), slog.LevelDebug, 2},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))
		var calls atomic.Int32
		err := Retry(tc.ctx, log, "read secret/data/app", func(context.Context) error {
			if calls.Add(1) < 3 {
				return vaultErr(500, "internal error")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if n := strings.Count(out, "transient failure, retrying"); n != tc.lines {
			t.Errorf("%s: %d retry lines, want %d:\n%s", tc.name, n, tc.lines, out)
		}
		if tc.lines == 0 {
			continue
		}
		for _, want := range []string{`op="read secret/data/app"`, "attempt=1", "attempt=2", `err="internal error (HTTP 500)"`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: log does not contain %s:\n%s", tc.name, want, out)
			}
		}
	}
}

// TestRetryWithMaxInterval: under WithMaxInterval the waits between
// attempts stay within the cap plus its jitter, still growing from the
// first and still jittered; without it they grow to the usual 10s.
func TestRetryWithMaxInterval(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cap     time.Duration
		longest time.Duration // no wait may be longer
		reach   time.Duration // some wait must be at least this long
	}{
		{"capped at 2s", 2 * time.Second, 3 * time.Second, time.Second},
		{"no cap", 0, 15 * time.Second, 5 * time.Second},
		{"cap above the default", time.Minute, 15 * time.Second, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if tc.cap > 0 {
					ctx = WithMaxInterval(ctx, tc.cap)
				}
				var at []time.Time
				_ = Retry(ctx, slog.New(slog.DiscardHandler), "read x", func(context.Context) error {
					at = append(at, time.Now())
					return vaultErr(503, "sealed")
				})
				var longest time.Duration
				waits := map[time.Duration]bool{}
				for i := 1; i < len(at); i++ {
					w := at[i].Sub(at[i-1])
					longest = max(longest, w)
					waits[w] = true
				}
				if first := at[1].Sub(at[0]); first > 500*time.Millisecond {
					t.Errorf("first wait %s; want the usual 250ms ±50%%", first)
				}
				if longest > tc.longest || longest < tc.reach {
					t.Errorf("longest wait %s over %d attempts; want between %s and %s", longest, len(at), tc.reach, tc.longest)
				}
				if len(waits) < len(at)/2 {
					t.Errorf("only %d distinct waits over %d attempts: no jitter", len(waits), len(at))
				}
			})
		})
	}
}

// TestRetryTowardDeadline: before ctx's deadline the waits shrink to half
// the time left, not under the first wait, so that an attempt comes soon
// after Vault recovers while there is still time; without that, a wait
// grown to 8s-15s spans the end of a 20s deadline.
func TestRetryTowardDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 20 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		deadline, _ := ctx.Deadline()
		var at []time.Time
		err := Retry(ctx, slog.New(slog.DiscardHandler), "read x", func(context.Context) error {
			at = append(at, time.Now())
			return vaultErr(503, "sealed")
		})
		if err == nil {
			t.Fatal("Retry succeeded against a Vault that kept failing")
		}
		for i := 1; i < len(at); i++ {
			w, left := at[i].Sub(at[i-1]), deadline.Sub(at[i-1])
			if w > max(left/2, 250*time.Millisecond) {
				t.Errorf("attempt %d waited %s with %s left; want at most half the time left, or 250ms", i+1, w, left)
			}
		}
		if gap := deadline.Sub(at[len(at)-1]); gap > 250*time.Millisecond {
			t.Errorf("the last attempt came %s before the deadline; want within 250ms", gap)
		}
		if len(at) > 20 {
			t.Errorf("%d attempts in %s: the waits collapsed", len(at), timeout)
		}
	})
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, addr string
		wantErr    bool
	}{
		{"http", "http://127.0.0.1:8200", false},
		{"https", "https://vault.vault.svc:8200", false},
		{"no scheme", "vault:8200", true},
		{"host only", "vault.vault.svc", true},
		{"garbage", "://", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(tc.addr, "team-a", time.Second, discard())
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "vault address") {
					t.Errorf("err = %v, want one naming the vault address", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Address() != tc.addr || c.Namespace() != "team-a" {
				t.Errorf("address %q namespace %q", c.Address(), c.Namespace())
			}
		})
	}
}

// TestNewIgnoresVaultToken uses t.Setenv, so it does not run in parallel.
func TestNewIgnoresVaultToken(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "hvs.from-env")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:8200")
	c, err := New("", "", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Token() != "" {
		t.Error("the client took VAULT_TOKEN; only --auth-method token may use it")
	}
	if c.Address() != "http://127.0.0.1:8200" {
		t.Errorf("address %q, want VAULT_ADDR", c.Address())
	}
}

// TestStandbyRedirect: a standby that cannot forward answers 307 with the
// active node's address. Vault's client follows it once, as the vault CLI
// does; the log says which node redirected where, and a failure at the
// node redirected to is attributed to that node. A redirect Vault's
// client would hand back as an empty answer (a second one, one to the
// same node, a status it does not follow) is a transient error instead,
// for reads, renewals and revocations alike.
func TestStandbyRedirect(t *testing.T) {
	active := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"lease_id":"l","lease_duration":60,"renewable":true,"data":{"value":"v"}}`)
	}))
	t.Cleanup(active.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	redirector := func(code int, target func() string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// As Vault's respondStandby: a Location and no body.
			w.Header().Set("Location", target()+r.URL.Path)
			w.WriteHeader(code)
		}))
		t.Cleanup(s.Close)
		return s
	}
	standbyFor := func(target string) *httptest.Server {
		return redirector(http.StatusTemporaryRedirect, func() string { return target })
	}
	toActive, toDead := standbyFor(active.URL), standbyFor(dead)
	// A standby redirecting to a node that redirects again, as the node
	// that was active does while it steps down.
	twice := standbyFor(toActive.URL)
	var self *httptest.Server
	self = redirector(http.StatusTemporaryRedirect, func() string { return self.URL })
	permanent := redirector(http.StatusPermanentRedirect, func() string { return active.URL })

	for _, tc := range []struct {
		name, standby string
		from, target  string // of the redirect logged last
		disable       bool
		nilLog        bool
		wantOK        bool
		wantReason    string // "": followed
	}{
		{"to the active node", toActive.URL, toActive.URL, active.URL, false, false, true, ""},
		{"to a dead node", toDead.URL, toDead.URL, dead, false, false, false, ""},
		{"redirects disabled", toActive.URL, toActive.URL, active.URL, true, false, false, "VAULT_DISABLE_REDIRECTS is set"},
		{"twice", twice.URL, toActive.URL, active.URL, false, false, false, "had already been redirected to " + toActive.URL},
		{"twice, no logger", twice.URL, toActive.URL, active.URL, false, true, false, "had already been redirected to " + toActive.URL},
		{"to the node itself", self.URL, self.URL, self.URL, false, false, false, "redirects to the node itself"},
		{"308", permanent.URL, permanent.URL, active.URL, false, false, false, "HTTP 308 is not a redirect Vault's client follows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.disable {
				t.Setenv("VAULT_DISABLE_REDIRECTS", "true")
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			if tc.nilLog {
				log = nil
			}
			c, err := New(tc.standby, "", time.Second, log)
			if err != nil {
				t.Fatal(err)
			}
			c.SetToken("t")
			sec, err := c.Logical().Read("secret/x")
			t.Logf("read: %v", err)
			if ok := err == nil; ok != tc.wantOK {
				t.Fatalf("read: err %v, want ok=%v", err, tc.wantOK)
			}
			if err == nil && sec == nil {
				t.Fatal("read: no error and no secret")
			}
			if tc.wantReason != "" {
				ren, rerr := c.Sys().Renew("l", 60)
				if rerr == nil && ren == nil {
					t.Error("renewal: no error and no lease")
				}
				for what, err := range map[string]error{"read": err, "renewal": rerr, "revocation": c.Sys().Revoke("l")} {
					var re *RedirectError
					if !errors.As(err, &re) || re.From != tc.from || re.To != tc.target || !strings.Contains(re.Reason, tc.wantReason) || !Transient(err) {
						t.Errorf("%s: err = %v (%T), want a transient RedirectError from %s to %s: %s", what, err, err, tc.from, tc.target, tc.wantReason)
					}
				}
				if got := Node(err); got != tc.from {
					t.Errorf("Node(err) = %q, want the node that redirected, %s", got, tc.from)
				}
				if c := Cause(err); !strings.Contains(c, tc.wantReason) {
					t.Errorf("Cause = %q, want the reason %q", c, tc.wantReason)
				}
				want := fmt.Sprintf("not following it\" vault_addr=%s redirected_to=%s path=/v1/secret/x reason=", tc.from, tc.target)
				if m := logs.String(); !tc.nilLog && !strings.Contains(m, want) {
					t.Errorf("log %q lacks %q", m, want)
				}
				return
			}
			want := fmt.Sprintf("following it\" vault_addr=%s redirected_to=%s path=/v1/secret/x", tc.standby, tc.target)
			if m := logs.String(); !strings.Contains(m, want) {
				t.Errorf("log %q lacks %q", m, want)
			}
			if err != nil {
				if got := Node(err); got != dead {
					t.Errorf("Node(err) = %q, want the node redirected to, %s", got, dead)
				}
				logs.Reset()
				ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
				defer cancel()
				_ = Retry(ctx, log, "read secret/x", func(ctx context.Context) error {
					_, err := c.Logical().ReadWithContext(ctx, "secret/x")
					return err
				})
				if !strings.Contains(logs.String(), "vault_addr="+dead) {
					t.Errorf("retry log does not name the node that failed, %s:\n%s", dead, logs.String())
				}
			}
		})
	}
}

func TestNode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"response", fmt.Errorf("read: %w", vaultErr(503, "Vault is sealed")), "http://vault"},
		{"network", refused, "http://127.0.0.1:1"},
		{"none", errors.New("boom"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Node(tc.err); got != tc.want {
				t.Errorf("Node = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestNewTalksToTheAddressGiven: the address and namespace a caller
// passes (vault-init's resolved flags, or what state.json recorded) are
// where every request goes, whatever VAULT_AGENT_ADDR and VAULT_NAMESPACE
// say in the environment of, say, an operator's shell running
// vault-revoke. It uses t.Setenv, so it does not run in parallel.
func TestNewTalksToTheAddressGiven(t *testing.T) {
	type hit struct{ server, namespace, wrap string }
	hits := make(chan hit, 4)
	serve := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ns, set := r.Header[http.CanonicalHeaderKey("X-Vault-Namespace")]
			hits <- hit{name, fmt.Sprint(ns, set), r.Header.Get("X-Vault-Wrap-TTL")}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"data":{"ttl":60}}`)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	vault, agent := serve("vault"), serve("agent")
	t.Setenv("VAULT_AGENT_ADDR", agent.URL)
	t.Setenv("VAULT_NAMESPACE", "team-from-env")
	t.Setenv("VAULT_WRAP_TTL", "5m") // never asked: podlease cannot use wrapped answers
	for _, tc := range []struct {
		namespace, want string
	}{
		{"", "[] false"}, // the root namespace: no header at all
		{"team-a", "[team-a] true"},
	} {
		c, err := New(vault.URL, tc.namespace, time.Second, discard())
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken("t")
		if _, err := c.Auth().Token().LookupSelf(); err != nil {
			t.Fatal(err)
		}
		if h := <-hits; h.server != "vault" || h.namespace != tc.want || h.wrap != "" {
			t.Errorf("namespace %q: the request went to the %s with namespace header %s and wrap TTL %q, want the vault given with %s and none", tc.namespace, h.server, h.namespace, h.wrap, tc.want)
		}
	}
}

// TestRetryWithOneAttempt: under WithOneAttempt, Retry tries once and
// hands back that attempt's error as it is.
func TestRetryWithOneAttempt(t *testing.T) {
	t.Parallel()
	calls := 0
	want := vaultErr(503, "sealed")
	err := Retry(WithOneAttempt(context.Background()), discard(), "read x", func(context.Context) error {
		calls++
		return want
	})
	if calls != 1 || err != want {
		t.Errorf("%d calls, error %v; want one call and its error", calls, err)
	}
}
