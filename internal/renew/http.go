package renew

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/podlease/podlease/internal/state"
)

// status is what the loop publishes for the HTTP handlers.
type status struct {
	mu      sync.Mutex
	revoked bool
	token   credStatus
	secrets []credStatus
}

// credStatus is one credential's life, as /readyz and /metrics see it.
type credStatus struct {
	name   string
	leased bool          // counts for readiness
	lost   bool          // expired or refused before its expiry
	expiry time.Time     // zero: does not expire
	ttl    time.Duration // its normal TTL, which sizes the final stretch
}

// finalStretch is how close to its expiry a credential makes the pod
// unready: min(1m, TTL/4).
func (c credStatus) finalStretch() time.Duration {
	if c.ttl > 0 {
		return min(time.Minute, c.ttl/4)
	}
	return time.Minute
}

// expiresAt is the expiry as a Unix time in whole seconds, at most now
// once lost: Vault said the credential is gone, whatever its expiry said.
func (c credStatus) expiresAt(now time.Time) float64 {
	e := c.expiry
	if c.lost && now.Before(e) {
		e = now
	}
	return float64(e.Unix())
}

// publish copies the loop's view into the status.
func (s *sidecar) publish() {
	secs := make([]credStatus, 0, len(s.st.Secrets))
	for _, g := range s.groups {
		for _, sec := range g.secrets {
			c := credStatus{name: sec.Name, leased: g.kind == state.KindLeased, lost: g.kind == state.KindLeased && g.gone, expiry: g.expiry, ttl: g.ld}
			if e := s.expiry(g); !e.IsZero() {
				c.expiry = e
			}
			secs = append(secs, c)
		}
	}
	tok := credStatus{name: "token", leased: true, lost: s.tok.lost, expiry: s.tok.expiry, ttl: s.tok.ttl}
	s.status.mu.Lock()
	s.status.token, s.status.secrets = tok, secs
	s.status.mu.Unlock()
}

func (st *status) setRevoked() {
	st.mu.Lock()
	st.revoked = true
	st.mu.Unlock()
}

func (st *status) get() (revoked bool, token credStatus, secrets []credStatus) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.revoked, st.token, st.secrets
}

// readiness returns "" when every credential is valid and not in its
// final stretch, else why not.
func (st *status) readiness(now time.Time) string {
	revoked, tok, secs := st.get()
	if revoked {
		return "credentials revoked by vault-revoke: the pod is ending"
	}
	var late []string
	for _, c := range append(secs, tok) {
		if c.leased && (c.lost || !c.expiry.IsZero() && c.expiry.Sub(now) < c.finalStretch()) {
			late = append(late, c.name)
		}
	}
	if len(late) > 0 {
		return "expired or about to expire: " + strings.Join(late, ", ")
	}
	return ""
}

// handler serves /healthz, /readyz and /metrics.
func handler(st *status, m *metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := st.readiness(time.Now()); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.write(w, st, time.Now())
	})
	return mux
}

// serveHTTP listens on addr and serves h until close is called.
func serveHTTP(addr string, h http.Handler, log *slog.Logger) (closeFn func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("HTTP server stopped", "err", err)
		}
	}()
	log.Info("serving /healthz, /readyz and /metrics", "listen", ln.Addr().String())
	return func() {
		srv.Close()
		<-done
	}, nil
}
