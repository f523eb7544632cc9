package renew

import (
	"strings"
	"sync"
	"time"

	"github.com/podlease/podlease/internal/state"
)

// status is what the loop publishes for the HTTP handlers.
type status struct {
	mu      sync.Mutex
	loaded  bool // the loop published once: before, nothing is known
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
	secs := make([]credStatus, 0, len(s.secrets))
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
	s.status.token, s.status.secrets, s.status.loaded = tok, secs, true
	s.status.mu.Unlock()
}

func (st *status) setRevoked() {
	st.mu.Lock()
	st.revoked = true
	st.mu.Unlock()
}

func (st *status) get() (loaded, revoked bool, token credStatus, secrets []credStatus) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.loaded, st.revoked, st.token, st.secrets
}

// readiness returns "" when every credential is valid and not in its
// final stretch, else why not.
func (st *status) readiness(now time.Time) string {
	loaded, revoked, tok, secs := st.get()
	switch {
	case revoked:
		return "credentials revoked by vault-revoke: the pod is ending"
	case !loaded:
		// The HTTP server answers from the start, before the state is
		// read: a credential may already have expired.
		return "starting: the state is not read yet"
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
