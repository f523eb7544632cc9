package renew

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/version"
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

// remaining is the seconds left, at most 0 once lost.
func (c credStatus) remaining(now time.Time) float64 {
	r := c.expiry.Sub(now).Seconds()
	if c.lost {
		r = min(r, 0)
	}
	return r
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
func handler(st *status, reg *prometheus.Registry) http.Handler {
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
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

// metrics are vault-renew's Prometheus metrics.
type metrics struct {
	renewals      *prometheus.CounterVec
	failures      *prometheus.CounterVec
	rotations     *prometheus.CounterVec
	tokenRenewals prometheus.Counter
	tokenFailures prometheus.Counter
	logins        prometheus.Counter
}

func (m *metrics) renewed(g *group) { m.inc(m.renewals, g) }
func (m *metrics) failed(g *group)  { m.inc(m.failures, g) }
func (m *metrics) rotated(g *group) { m.inc(m.rotations, g) }

func (m *metrics) inc(v *prometheus.CounterVec, g *group) {
	for _, sec := range g.secrets {
		v.WithLabelValues(sec.Name).Inc()
	}
}

// newMetrics registers every metric on a private registry.
func newMetrics(st *status, names []string) (*metrics, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	m := &metrics{
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podlease_secret_renewals_total", Help: "Successful lease renewals, per secret.",
		}, []string{"secret"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podlease_secret_renewal_failures_total", Help: "Failed attempts to renew, replace or re-read a secret, per secret.",
		}, []string{"secret"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podlease_secret_rotations_total", Help: "Times a secret's file was rewritten with a new credential or changed data, per secret.",
		}, []string{"secret"}),
		tokenRenewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podlease_token_renewals_total", Help: "Successful renewals of the Vault token.",
		}),
		tokenFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podlease_token_failures_total", Help: "Failed lookups, renewals and logins of the Vault token.",
		}),
		logins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podlease_logins_total", Help: "Logins by vault-renew that replaced the Vault token.",
		}),
	}
	for _, n := range names {
		m.renewals.WithLabelValues(n)
		m.failures.WithLabelValues(n)
		m.rotations.WithLabelValues(n)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podlease_build_info", Help: "Always 1; the version label says which podlease runs.",
		ConstLabels: prometheus.Labels{"version": version.Version},
	})
	buildInfo.Set(1)
	// Only podlease's own series: every pod runs a sidecar, so the usual
	// go_* and process_* series would multiply across the fleet (and cost
	// ~0.75 MiB of resident memory); cAdvisor already reports the
	// container's memory and CPU.
	reg.MustRegister(m.renewals, m.failures, m.rotations, m.tokenRenewals, m.tokenFailures, m.logins, buildInfo,
		&expiryCollector{st: st})
	return m, reg
}

// expiryCollector reports seconds to expiry at scrape time.
type expiryCollector struct{ st *status }

var (
	secretExpiryDesc = prometheus.NewDesc("podlease_secret_expiry_seconds",
		"Seconds until the secret's current credential expires (leased) or Vault rotates it (static credentials); negative once expired.", []string{"secret"}, nil)
	tokenExpiryDesc = prometheus.NewDesc("podlease_token_expiry_seconds",
		"Seconds until the Vault token expires; negative once expired.", nil, nil)
	revokedDesc = prometheus.NewDesc("podlease_revoked",
		"1 once vault-revoke revoked the pod's credentials and vault-renew stopped, else 0.", nil, nil)
)

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- secretExpiryDesc
	ch <- tokenExpiryDesc
	ch <- revokedDesc
}

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	revoked, tok, secs := c.st.get()
	for _, s := range secs {
		if !s.expiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(secretExpiryDesc, prometheus.GaugeValue, s.remaining(now), s.name)
		}
	}
	if !tok.expiry.IsZero() {
		ch <- prometheus.MustNewConstMetric(tokenExpiryDesc, prometheus.GaugeValue, tok.remaining(now))
	}
	v := 0.0
	if revoked {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(revokedDesc, prometheus.GaugeValue, v)
}
