package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Fault is what a FaultProxy does to a request.
type Fault int

// The faults a FaultProxy injects.
const (
	// Pass forwards every request unchanged.
	Pass Fault = iota
	// Refuse closes the listener and every open connection: new
	// connections are refused, as when Vault is down.
	Refuse
	// Reset reads the request headers, then resets the connection (TCP
	// RST) without forwarding or answering: the client sees "connection
	// reset by peer" mid-request.
	Reset
	// Drop forwards the request, so Vault acts on it, then resets the
	// client's connection instead of answering: the answer is lost.
	Drop
	// Silent accepts connections and reads requests but answers nothing
	// while the fault lasts, as behind a network partition or a hung
	// server; requests still waiting when it ends are forwarded then.
	Silent
	// Hang accepts connections and reads requests but never answers them,
	// not even after the fault ends: only the client's own timeout frees
	// it, as when a connection dies silently (a NAT or firewall dropped
	// it).
	Hang
	// Status500 answers 500 with a Vault-style error body.
	Status500
	// Status429 answers 429 (Vault's rate-limit quota) with Retry-After.
	Status429
	// Slow delays every request by Rule.Delay, then forwards it.
	Slow
	// RedirectTwice answers 307 to a second address, which answers 307
	// to Vault: a standby that cannot forward, redirecting to the node
	// that was active, which redirects again while it steps down. Vault's
	// client follows one redirect; the request never reaches Vault.
	RedirectTwice
)

var faultNames = [...]string{"pass", "refuse", "reset", "drop", "silent", "hang", "500", "429", "slow", "redirect"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Rule is the fault in force and which requests it hits.
type Rule struct {
	Fault Fault
	// PathPrefix limits the fault to requests whose URL path starts with
	// it, e.g. "/v1/database/creds/"; empty hits every request. Refuse
	// works on connections and ignores it.
	PathPrefix string
	// Delay is Slow's delay per request (default 2s).
	Delay time.Duration
}

// FaultProxy is an HTTP-aware proxy on 127.0.0.1 that tests put between a
// podlease binary and Vault to inject the faults a real network and a real
// Vault produce: refused connections, resets, silence, 5xx and 429
// answers, slowness.
type FaultProxy struct {
	target *url.URL
	addr   string
	rp     *httputil.ReverseProxy
	srv    *http.Server
	// second is RedirectTwice's second address: it redirects every
	// request to target.
	second     *http.Server
	secondAddr string

	mu      sync.Mutex
	rule    Rule
	changed chan struct{} // closed and replaced whenever rule changes
	ln      net.Listener  // nil while refusing
	conns   map[net.Conn]struct{}
	closed  bool
	hits    map[Fault]int
}

// NewFaultProxy starts a fault proxy to target (host:port, plain HTTP) on
// a free port, passing everything until Set says otherwise.
func NewFaultProxy(target string) (*FaultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy listen: %w", err)
	}
	u := &url.URL{Scheme: "http", Host: target}
	p := &FaultProxy{
		target:  u,
		addr:    ln.Addr().String(),
		changed: make(chan struct{}),
		conns:   map[net.Conn]struct{}{},
		hits:    map[Fault]int{},
	}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.rp.Transport = &http.Transport{DisableKeepAlives: true}
	p.rp.ErrorLog = discardLog
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.handle),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         p.connState,
		ErrorLog:          discardLog,
	}
	second, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("fault proxy listen: %w", err)
	}
	p.secondAddr = second.Addr().String()
	p.second = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			redirect(w, r, u.Host)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          discardLog,
	}
	p.ln = ln
	go func() { _ = p.srv.Serve(ln) }()
	go func() { _ = p.second.Serve(second) }()
	return p, nil
}

// URL is the proxy's address as a VAULT_ADDR.
func (p *FaultProxy) URL() string { return "http://" + p.addr }

// Set puts rule in force from now on.
func (p *FaultProxy) Set(rule Rule) error {
	if rule.Fault == Slow && rule.Delay == 0 {
		rule.Delay = 2 * time.Second
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("fault proxy closed")
	}
	p.rule = rule
	close(p.changed)
	p.changed = make(chan struct{})
	if rule.Fault == Refuse {
		if p.ln != nil {
			p.ln.Close()
			p.ln = nil
		}
		for c := range p.conns {
			c.Close()
		}
		return nil
	}
	if p.ln != nil {
		return nil
	}
	var ln net.Listener
	var err error
	// The kernel may hold the port briefly after the old listener closed.
	for range 100 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("fault proxy listen again on %s: %w", p.addr, err)
	}
	p.ln = ln
	go func() { _ = p.srv.Serve(ln) }()
	return nil
}

// Clear is Set(Rule{}): forward everything again.
func (p *FaultProxy) Clear() error { return p.Set(Rule{}) }

// SetFor puts rule in force for d, then clears it, without blocking.
func (p *FaultProxy) SetFor(rule Rule, d time.Duration) error {
	if err := p.Set(rule); err != nil {
		return err
	}
	time.AfterFunc(d, func() { _ = p.Clear() })
	return nil
}

// Hits returns how many requests each fault has hit (Pass: forwarded
// unharmed). Refused connections are not counted: they never reach it.
func (p *FaultProxy) Hits() map[Fault]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Fault]int, len(p.hits))
	for k, v := range p.hits {
		out[k] = v
	}
	return out
}

// Close stops the proxy and closes every connection.
func (p *FaultProxy) Close() {
	p.mu.Lock()
	p.closed = true
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	_ = p.srv.Close()
	_ = p.second.Close()
}

func (p *FaultProxy) connState(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case http.StateNew:
		if p.rule.Fault == Refuse || p.closed {
			c.Close() // accepted just before the listener closed
			return
		}
		p.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

// current returns the rule that applies to r and a channel closed when the
// rule changes.
func (p *FaultProxy) current(r *http.Request) (Rule, <-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rule := p.rule
	if rule.PathPrefix != "" && !strings.HasPrefix(r.URL.Path, rule.PathPrefix) {
		rule = Rule{}
	}
	return rule, p.changed, p.closed
}

func (p *FaultProxy) count(f Fault) {
	p.mu.Lock()
	p.hits[f]++
	p.mu.Unlock()
}

func (p *FaultProxy) handle(w http.ResponseWriter, r *http.Request) {
	for {
		rule, changed, closed := p.current(r)
		if closed {
			reset(w)
			return
		}
		switch rule.Fault {
		case Pass:
			p.count(Pass)
			p.rp.ServeHTTP(w, r)
			return
		case Refuse:
			// A request on a connection opened before the cut.
			p.count(Refuse)
			reset(w)
			return
		case Reset:
			p.count(Reset)
			reset(w)
			return
		case Drop:
			p.count(Drop)
			p.drop(w, r)
			return
		case Silent:
			p.count(Silent)
			select {
			case <-changed:
				continue // forwarded (or otherwise handled) under the new rule
			case <-r.Context().Done():
				return // the client gave up
			}
		case Hang:
			p.count(Hang)
			<-r.Context().Done() // the client gave up, or the proxy closed
			return
		case Status500:
			p.count(Status500)
			vaultError(w, http.StatusInternalServerError, "internal error")
			return
		case Status429:
			p.count(Status429)
			w.Header().Set("Retry-After", "1")
			vaultError(w, http.StatusTooManyRequests, "request path \""+strings.TrimPrefix(r.URL.Path, "/v1/")+"\": rate limit quota exceeded")
			return
		case RedirectTwice:
			p.count(RedirectTwice)
			redirect(w, r, p.secondAddr)
			return
		case Slow:
			p.count(Slow)
			select {
			case <-time.After(rule.Delay):
				p.rp.ServeHTTP(w, r)
			case <-r.Context().Done():
			}
			return
		}
	}
}

// drop forwards r to Vault and waits for its answer, then resets the
// client's connection instead of passing the answer on.
func (p *FaultProxy) drop(w http.ResponseWriter, r *http.Request) {
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = p.target.Scheme, p.target.Host, p.target.Host, ""
	resp, err := p.rp.Transport.RoundTrip(out)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	reset(w)
}

// redirect answers as a Vault standby that cannot forward does: 307, the
// same request at host, no body.
func redirect(w http.ResponseWriter, r *http.Request, host string) {
	w.Header().Set("Location", "http://"+host+r.URL.RequestURI())
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// reset aborts the connection under w with a TCP RST.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	c, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

func vaultError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, "{\"errors\":[%q]}\n", msg)
}

// discardLog silences the HTTP server's and reverse proxy's own logging of
// the failures the proxy causes on purpose.
var discardLog = log.New(io.Discard, "", 0)
