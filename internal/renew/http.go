package renew

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

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

// The listener answers the kubelet's probes and a metrics scraper: a
// handful of small GET requests. It listens on the pod's address, where
// any pod the network lets in can reach it, so what one client can make
// it hold is bounded: at most maxConns connections at once (a further one
// waits in the kernel's backlog until one ends), each with headers of at
// most maxHeaderBytes, which must come within headerTimeout, and kept
// idle for at most idleTimeout. That is under a MiB in all, where
// net/http's defaults (no connection limit, 1 MiB of headers each) let a
// few dozen slow clients take the sidecar past its memory limit.
const (
	maxConns       = 32
	maxHeaderBytes = 8 << 10
	headerTimeout  = 2 * time.Second
	idleTimeout    = 10 * time.Second
)

// serveHTTP listens on addr and serves h until close is called.
func serveHTTP(addr string, h http.Handler, log *slog.Logger) (closeFn func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(netutil.LimitListener(ln, maxConns)); err != nil && err != http.ErrServerClosed {
			log.Error("HTTP server stopped", "err", err)
		}
	}()
	log.Info("serving /healthz, /readyz and /metrics", "listen", ln.Addr().String())
	return func() {
		srv.Close()
		<-done
	}, nil
}
