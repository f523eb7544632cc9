// Package vaultclient builds Vault API clients the way the vault CLI does
// (every VAULT_* variable honoured), sorts Vault errors into transient and
// permanent, and retries the transient ones with backoff.
package vaultclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/vault/api"
)

// DialTimeout bounds connecting to a Vault node (Vault's client allows
// 30 s): a node that is gone, its address unanswered, is given up on
// soon, while a request to a node that answers may wait for as long as
// the caller's context allows. 3 s leaves room for one lost SYN (Linux
// resends it after 1 s).
const DialTimeout = 3 * time.Second

// New returns a client for addr (empty: VAULT_ADDR) in namespace (empty:
// the root namespace, whatever VAULT_NAMESPACE says: callers pass the
// namespace they resolved, and vault-renew and vault-revoke the one
// state.json recorded). An addr given wins over VAULT_AGENT_ADDR too,
// which Vault's client would otherwise send every request to. The
// client's own retries are off: callers retry with Retry so that one
// deadline bounds everything. requestTimeout bounds each HTTP request.
func New(addr, namespace string, requestTimeout time.Duration, log *slog.Logger) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault client settings (VAULT_* environment): %w", cfg.Error)
	}
	if err := cfg.ReadEnvironment(); err != nil {
		return nil, fmt.Errorf("vault client settings (VAULT_* environment): %w", err)
	}
	if addr != "" {
		cfg.Address = addr
		cfg.AgentAddress = ""
	}
	u, err := url.Parse(cfg.Address)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("vault address %q: want a URL such as https://vault.vault.svc:8200", cfg.Address)
	}
	cfg.MaxRetries = 0
	if requestTimeout > 0 {
		cfg.Timeout = requestTimeout
	}
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.DialContext = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok && t.TLSClientConfig != nil && t.TLSClientConfig.InsecureSkipVerify && log != nil {
		log.Warn("TLS verification of Vault's certificate is off (VAULT_SKIP_VERIFY): use VAULT_CACERT instead in production", "vault_addr", cfg.Address)
	}
	cfg.HttpClient.CheckRedirect = checkRedirect(log, node(u), cfg.DisableRedirects)
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// A VAULT_TOKEN in the environment is only used by the token auth
	// method, which sets it explicitly.
	c.ClearToken()
	if namespace == "" {
		c.ClearNamespace() // the one Vault's client took from VAULT_NAMESPACE
	} else {
		c.SetNamespace(namespace)
	}
	c.SetWrappingLookupFunc(noWrapping)
	return c, nil
}

// noWrapping keeps Vault's answers unwrapped whatever VAULT_WRAP_TTL says:
// Vault's client would otherwise ask every request's answer wrapped (a
// login's token, a lease's renewal, a credential), which podlease cannot
// use, and each wrapped credential would be a lease nobody names.
func noWrapping(operation, path string) string { return "" }

// SingleUse returns a client like c (address, namespace and other
// headers, TLS settings, timeouts, redirect hook; no token) that opens a
// connection of its own for every request and closes it after, over
// HTTP/1.1: a request it sends cannot wait behind, or be multiplexed
// onto, a connection of c's that a hung node or a partition holds, and a
// load balancer may send it to another node.
func SingleUse(c *api.Client) (*api.Client, error) {
	cfg := c.CloneConfig() // its *http.Client is a copy; the transport is c's
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t = t.Clone()
		t.DisableKeepAlives = true
		// HTTP/2 off: the clone would hand a TLS connection that
		// negotiated it to c's HTTP/2 connection pool.
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		t.ForceAttemptHTTP2 = false
		if t.TLSClientConfig != nil {
			t.TLSClientConfig = t.TLSClientConfig.Clone()
			t.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		cfg.HttpClient.Transport = t
	}
	nc, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	nc.SetHeaders(c.Headers())
	nc.ClearToken()
	nc.SetWrappingLookupFunc(noWrapping)
	return nc, nil
}

// checkRedirect is the HTTP client's redirect hook. A Vault standby
// redirects to the active node only when it cannot forward the request
// (the active node unreachable from it, or gone in a failover), so the
// node the request ends at, and any error from it, is not the one the
// address names: the hook logs which node redirected where.
//
// Vault's client follows one redirect itself (a 301, 302 or 307) and
// returns any other as an answer with no error and no body, which its
// methods read as "no value" (a renewal with no lease, a read with no
// secret) and, for a revocation, as done. In a failover that is no rare
// case: the node redirected to is stepping down too and redirects again.
// So the hook hands Vault's client only a redirect it will follow and end
// at another node: the first one, from the configured address (origin)
// to a different node. Any other redirect, and every one when
// VAULT_DISABLE_REDIRECTS is set, becomes a RedirectError, retried like
// other transient failures.
func checkRedirect(log *slog.Logger, origin string, disabled bool) func(*http.Request, []*http.Request) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(req *http.Request, via []*http.Request) error {
		prev := via[len(via)-1]
		e := &RedirectError{From: node(prev.URL), To: node(req.URL)}
		switch code := statusOf(req.Response); {
		case disabled:
			e.Reason = "VAULT_DISABLE_REDIRECTS is set"
		case !strings.EqualFold(node(via[0].URL), origin):
			e.Reason = "the request had already been redirected to " + e.From + ", and Vault's client follows one redirect"
		case strings.EqualFold(e.From, e.To):
			e.Reason = "it redirects to the node itself"
		case code != http.StatusMovedPermanently && code != http.StatusFound && code != http.StatusTemporaryRedirect:
			e.Reason = fmt.Sprintf("HTTP %d is not a redirect Vault's client follows", code)
		}
		if e.Reason != "" {
			log.Warn("Vault node redirected the request, as a standby does when it cannot forward to the active node; not following it",
				"vault_addr", e.From, "redirected_to", e.To, "path", prev.URL.Path, "reason", e.Reason)
			return e
		}
		log.Warn("Vault node redirected the request, as a standby does when it cannot forward to the active node; following it",
			"vault_addr", e.From, "redirected_to", e.To, "path", prev.URL.Path)
		return http.ErrUseLastResponse
	}
}

func node(u *url.URL) string { return u.Scheme + "://" + u.Host }

func statusOf(r *http.Response) int {
	if r == nil {
		return 0
	}
	return r.StatusCode
}

// RedirectError is a redirect not followed, and why.
type RedirectError struct {
	From, To, Reason string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("Vault node %s redirected the request to %s (a standby that cannot forward to the active node); not followed: %s", e.From, e.To, e.Reason)
}

// Node returns the Vault node (scheme://host) a failed request went to,
// from the request URL its error carries, or "". After a redirect that is
// the node redirected to, not the configured address; for a redirect not
// followed, the node that answered with it.
func Node(err error) string {
	var raw string
	var rd *RedirectError
	var re *api.ResponseError
	var ue *url.Error
	switch {
	case errors.As(err, &rd):
		return rd.From
	case errors.As(err, &re):
		raw = re.URL
	case errors.As(err, &ue):
		raw = ue.URL
	default:
		return ""
	}
	u, perr := url.Parse(raw)
	if perr != nil || u.Host == "" {
		return ""
	}
	return node(u)
}

// Transient reports whether err is worth retrying: network failures,
// timeouts, 5xx and 429 (and 412, Vault's "not yet replicated"), and,
// whatever their status, a leadership change (see LeadershipChange) and
// a revocation the secrets engine failed (see RevocationFailed).
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusPreconditionFailed ||
			LeadershipChange(err) || RevocationFailed(err) || RenewalFailed(err)
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	// A certificate Vault's client does not trust, or a server that does
	// not speak TLS, stays that way until someone changes the settings.
	if tlsProblem(err) != "" {
		return false
	}
	// Transport failures reach us as *url.Error from the HTTP client or
	// *net.OpError; a bare net.Error test would also match syscall.Errno,
	// such as a missing credential file.
	var ue *url.Error
	var oe *net.OpError
	return errors.As(err, &ue) || errors.As(err, &oe) || errors.Is(err, context.DeadlineExceeded)
}

// leadershipLost are the words of Vault (and of its Raft library) for a
// request that met a node ceasing to be, or not yet being, the active
// one.
var leadershipLost = []string{
	"node is not the leader",
	"leadership lost while committing log",
	"leadership transfer in progress",
	"raft is already shutdown",
	"vault is in standby mode",
	"active cluster node not found",
}

// LeadershipChange reports whether Vault answered err because its active
// node changed under the request. Vault's system endpoints pass a storage
// error on as 400, so revoking or renewing a lease on a node that has
// just stepped down answers "400 failed to delete lease entry: node is
// not the leader": a failover, over in seconds, not a bad request and
// not a lease that is gone.
func LeadershipChange(err error) bool { return says(err, leadershipLost...) }

// RevocationFailed reports whether Vault could not revoke a lease because
// its secrets engine failed: "400 failed to revoke entry: ..." carries the
// engine's error, for the database engine the database's (unreachable,
// or PostgreSQL's "tuple concurrently updated" when Vault revokes the
// same user from two sessions, as when a token's revocation runs beside
// its lease's). Vault keeps the lease, so it is not gone, and another
// try may work.
func RevocationFailed(err error) bool { return says(err, "failed to revoke entry") }

// RenewalFailed reports whether Vault answered a lease renewal with its
// secrets engine's failure: "400 failed to renew entry: ..." (the
// database unreachable, the role deleted). Vault still holds the lease,
// which works until its expiry, so it is not gone, and another try may
// work.
func RenewalFailed(err error) bool { return says(err, "failed to renew entry") }

// says reports whether err is a Vault error answer one of whose messages
// holds one of words (lower case), whatever the message's case.
func says(err error, words ...string) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, e := range re.Errors {
		e = strings.ToLower(e)
		for _, w := range words {
			if strings.Contains(e, w) {
				return true
			}
		}
	}
	return false
}

// TokenInvalid reports whether Vault refused the request's token itself
// (revoked, expired or unknown), not what the token asked for. Since
// Vault 1.17 such a refusal is a 403 that says "invalid token" beside
// "permission denied"; a plain "permission denied" is the policy's
// answer to a live token, and must not be taken for a dead one.
func TokenInvalid(err error) bool {
	switch StatusCode(err) {
	case 401:
		return true
	case 400, 403:
		msg := strings.ToLower(Cause(err))
		return strings.Contains(msg, "invalid token") || strings.Contains(msg, "bad token")
	}
	return false
}

// StatusCode returns the HTTP status of a Vault error response, or 0.
func StatusCode(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// Cause renders a Vault error briefly: Vault's own messages for an error
// response (never the request body, which may hold a secret), the network
// error otherwise.
func Cause(err error) string {
	var re *api.ResponseError
	if errors.As(err, &re) {
		if re.RawError && len(re.Errors) == 1 {
			// Not Vault's JSON: a proxy's or load balancer's page,
			// whole HTML documents at times. A short excerpt of its
			// text names it; the rest would fill every retry's line.
			return fmt.Sprintf("%q (HTTP %d, not an answer from Vault: a proxy or load balancer in the way?)", excerpt(re.Errors[0], 120), re.StatusCode)
		}
		msgs := make([]string, 0, len(re.Errors))
		for _, e := range re.Errors {
			if e = flatten(e); e != "" {
				msgs = append(msgs, e)
			}
		}
		msg := strings.Join(msgs, "; ")
		if msg == "" {
			msg = http.StatusText(re.StatusCode)
		}
		return fmt.Sprintf("%s (HTTP %d)", msg, re.StatusCode)
	}
	if hint := tlsProblem(err); hint != "" {
		return hint
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// markup is an HTML or XML tag.
var markup = regexp.MustCompile(`<[^>]*>`)

// excerpt is the text of body without markup, on one line, cut to at most
// n runes.
func excerpt(body string, n int) string {
	text := strings.Join(strings.Fields(markup.ReplaceAllString(body, " ")), " ")
	if r := []rune(text); len(r) > n {
		text = string(r[:n]) + "…"
	}
	return text
}

// multiErrorHead is how go-multierror, which Vault uses, starts its text:
// "1 error occurred:\n\t* permission denied\n\n".
var multiErrorHead = regexp.MustCompile(`^\d+ errors? occurred:`)

// flatten puts one of Vault's error messages on one line: the items of a
// multierror list joined with "; ", any other line break or tab a space.
func flatten(msg string) string {
	msg = strings.TrimSpace(msg)
	if head := multiErrorHead.FindString(msg); head != "" {
		var items []string
		for _, line := range strings.Split(msg[len(head):], "\n") {
			if line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*")); line != "" {
				items = append(items, line)
			}
		}
		msg = strings.Join(items, "; ")
	}
	return strings.Join(strings.Fields(msg), " ")
}

// tlsProblem explains a TLS failure and what to change, or returns "" if
// err is not one.
func tlsProblem(err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown):
		return fmt.Sprintf("TLS: Vault's certificate is not signed by a trusted CA (%v): set VAULT_CACERT (or VAULT_CAPATH) to the CA that signed it", unknown)
	case errors.As(err, &hostname):
		return fmt.Sprintf("TLS: Vault's certificate does not match the name the client checks (%v): fix the address or VAULT_TLS_SERVER_NAME", hostname)
	case errors.As(err, &invalid):
		return fmt.Sprintf("TLS: Vault's certificate is not valid (%v)", invalid)
	case errors.As(err, &verify):
		return fmt.Sprintf("TLS: cannot verify Vault's certificate (%v)", verify.Err)
	case errors.Is(err, http.ErrSchemeMismatch):
		return "TLS: the server at this address answers plain HTTP: use http:// or Vault's TLS port"
	case errors.As(err, &record):
		return "TLS: the server at this address does not speak TLS: use http:// or Vault's TLS port"
	}
	return ""
}

// Backoff is the retry schedule: exponential from 250ms, doubling, with
// ±50% jitter, capped at 10s between tries. Unbounded in time: the
// context's deadline ends it.
func Backoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = 0
	return b
}

type maxIntervalKey struct{}

// WithMaxInterval caps Retry's waits under ctx at d (±50% jitter), for a
// caller that has nothing left to lose by asking more often: one whose
// credential is already gone.
func WithMaxInterval(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, maxIntervalKey{}, d)
}

type quietKey struct{}

// WithQuietRetries makes Retry log each retry under ctx at debug level,
// for a caller that logs the outcome itself and may retry for hours (a
// sidecar in a Vault outage): its own line says how the attempts ended.
func WithQuietRetries(ctx context.Context) context.Context {
	return context.WithValue(ctx, quietKey{}, true)
}

// HalfTheTimeLeft is ctx cut at half the time left before its deadline,
// for one of several steps that share it: one that gets no answer leaves
// time for the others. Without a deadline it is ctx.
func HalfTheTimeLeft(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok {
		return context.WithTimeout(ctx, time.Until(dl)/2)
	}
	return ctx, func() {}
}

type oneAttemptKey struct{}

// WithOneAttempt makes Retry under ctx try once and return that attempt's
// error as it is: for a caller that paces its own attempts, such as a
// sidecar retrying a lost credential at a fleet-friendly pace.
func WithOneAttempt(ctx context.Context) context.Context {
	return context.WithValue(ctx, oneAttemptKey{}, true)
}

// towardDeadline shrinks the waits of a backoff to half the time left
// before a deadline (but not under the backoff's first wait), so that the
// attempts go on until the deadline instead of one long wait spanning it:
// a caller with a deadline (a credential about to end, a --timeout) wants
// an attempt soon after Vault recovers, while there is still time.
type towardDeadline struct {
	*backoff.ExponentialBackOff
	deadline time.Time
}

func (t towardDeadline) NextBackOff() time.Duration {
	d := t.ExponentialBackOff.NextBackOff()
	if d == backoff.Stop {
		return d
	}
	return min(d, max(time.Until(t.deadline)/2, t.InitialInterval))
}

// Retry runs op until it succeeds, fails permanently (not Transient) or ctx
// ends; before ctx's deadline the waits shrink (towardDeadline). what
// names the operation in logs ("read database/creds/app"). On ctx's end
// it returns the last error seen, wrapped with the context's.
func Retry(ctx context.Context, log *slog.Logger, what string, op func(context.Context) error) error {
	if once, _ := ctx.Value(oneAttemptKey{}).(bool); once {
		return op(ctx)
	}
	var last error
	attempt := 0
	b := Backoff()
	if d, ok := ctx.Value(maxIntervalKey{}).(time.Duration); ok && d > 0 && d < b.MaxInterval {
		b.MaxInterval = d
	}
	var schedule backoff.BackOff = b
	if deadline, ok := ctx.Deadline(); ok {
		schedule = towardDeadline{b, deadline}
	}
	err := backoff.RetryNotify(func() error {
		attempt++
		err := op(ctx)
		if err == nil {
			return nil
		}
		// Keep the error that explains the outage, not the deadline that
		// cut the last attempt short.
		if last == nil || ctx.Err() == nil {
			last = err
		}
		if !Transient(err) || ctx.Err() != nil {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(schedule, ctx), func(err error, wait time.Duration) {
		args := []any{"op", what, "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", Cause(err)}
		if node := Node(err); node != "" {
			args = append(args, "vault_addr", node)
		}
		level := slog.LevelWarn
		if quiet, _ := ctx.Value(quietKey{}).(bool); quiet {
			level = slog.LevelDebug
		}
		log.Log(context.Background(), level, "transient failure, retrying", args...)
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && last != nil {
		return &GaveUpError{Op: what, Last: last, Ctx: ctx.Err(), Attempts: attempt}
	}
	return err
}

// GaveUpError is returned by Retry when the deadline passed while the
// operation was still failing transiently.
type GaveUpError struct {
	Op       string
	Last     error
	Ctx      error
	Attempts int
}

func (e *GaveUpError) Error() string {
	attempts := fmt.Sprintf("%d attempts", e.Attempts)
	if e.Attempts == 1 {
		attempts = "1 attempt"
	}
	switch {
	case errors.Is(e.Ctx, context.Canceled):
		// A signal stopped the command: that is the news, not the
		// "context canceled" it made of the request in flight.
		if errors.Is(e.Last, context.Canceled) || errors.Is(e.Last, context.DeadlineExceeded) {
			return fmt.Sprintf("%s: interrupted during attempt %d", e.Op, e.Attempts)
		}
		return fmt.Sprintf("%s: interrupted after %s; the last one failed: %s", e.Op, attempts, Cause(e.Last))
	case errors.Is(e.Ctx, context.DeadlineExceeded):
		return fmt.Sprintf("%s: timed out after %s, Vault kept failing: %s", e.Op, attempts, Cause(e.Last))
	default:
		return fmt.Sprintf("%s: gave up after %s, Vault kept failing: %s", e.Op, attempts, Cause(e.Last))
	}
}

func (e *GaveUpError) Unwrap() []error { return []error{e.Last, e.Ctx} }
