package renew

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/vaultclient"
)

// fakeVault is the part of Vault that vault-renew talks to, with TTLs, max
// TTLs and token-owned leases modelled on the real thing: kubernetes
// login, token lookup/renew/revoke-self, dynamic database credentials,
// KV v2, and sys/leases renew/revoke. It keeps time with time.Now, so in a
// synctest bubble its clock is the bubble's.
type fakeVault struct {
	mu     sync.Mutex
	down   bool
	tokens map[string]*fakeToken // by token
	leases map[string]*fakeLease // by lease id
	kv     map[string]map[string]any
	n      int

	// Settings for new tokens and leases.
	tokenTTL, tokenMax time.Duration
	tokenPeriod        time.Duration // periodic tokens: renewals give the period, no max
	leaseTTL, leaseMax time.Duration
	denyLeaseRenew     bool
	batch              bool // new tokens are batch tokens: no accessor, never renewed
	// answers force an error answer on a path (after the token check);
	// onRequest, if set, sees every path asked with a token.
	answers   map[string]answer
	onRequest func(path string)
	failCreds bool // database/creds answers 503
	failLogin bool // logins answer 503
	// standby: vault.test answers every request with a redirect to
	// active.test, as a standby node does; activeDown: active.test
	// refuses connections; steppingDown: active.test redirects too, to
	// next.test, as the active node does while it steps down.
	standby, activeDown, steppingDown bool
	// latency is how long an answer takes to come back after Vault
	// handled the request, as over a slow network or from a busy node.
	latency time.Duration
	// hang swallows the next n requests on a path (by path, without
	// /v1/): they get no answer, as on a hung node or a connection a
	// partition swallowed, until the client gives up; Vault never sees
	// them.
	hang map[string]int

	// A static database role: its password changes every staticPeriod,
	// staticDelay after its ttl ran out (Vault's rotation queue).
	staticPeriod, staticDelay time.Duration
	staticRotated             time.Time
	staticN                   int

	// Counters tests assert on.
	logins, issued, leaseRenewals, tokenRenewals int
	kvReads                                      int
	requests                                     int            // every request with a token
	asked                                        map[string]int // requests with a token, by path
	denied                                       int            // requests refused for a dead token
	refused                                      int            // requests refused while down
	loginTries                                   int            // logins asked, answered or refused
}

// answer is an error answer Vault gives.
type answer struct {
	code int
	msg  string
}

// answer makes Vault answer path with an error (code 0: answer normally
// again).
func (v *fakeVault) answer(path string, code int, msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if code == 0 {
		delete(v.answers, path)
		return
	}
	v.answers[path] = answer{code, msg}
}

type fakeToken struct {
	token, accessor string
	ttl, max        time.Duration
	issued, expiry  time.Time
	revoked         bool
}

type fakeLease struct {
	id, path, token    string
	username, password string
	ttl, max           time.Duration
	issued, expiry     time.Time
	revoked            bool
}

func newFakeVault() *fakeVault {
	return &fakeVault{
		tokens:   map[string]*fakeToken{},
		leases:   map[string]*fakeLease{},
		kv:       map[string]map[string]any{},
		answers:  map[string]answer{},
		asked:    map[string]int{},
		hang:     map[string]int{},
		tokenTTL: time.Hour, tokenMax: 24 * time.Hour,
		leaseTTL: time.Hour, leaseMax: 24 * time.Hour,
	}
}

func (v *fakeVault) setFailCreds(fail bool) {
	v.mu.Lock()
	v.failCreds = fail
	v.mu.Unlock()
}

func (v *fakeVault) setDown(down bool) {
	v.mu.Lock()
	v.down = down
	v.mu.Unlock()
}

// newClient is a deps.newClient whose requests go straight to v, no
// network involved; otherwise it is vault-renew's own client, redirect
// hook included.
func (v *fakeVault) newClient(addr, namespace string, timeout time.Duration, log *slog.Logger) (*api.Client, error) {
	base, err := vaultclient.New("http://vault.test", namespace, timeout, log)
	if err != nil {
		return nil, err
	}
	cfg := base.CloneConfig()
	cfg.HttpClient.Transport = v
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	return c, nil
}

// RoundTrip serves a request in memory, or refuses it while v is down.
func (v *fakeVault) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	v.mu.Lock()
	down, standby, activeDown, steppingDown, latency := v.down, v.standby, v.activeDown, v.steppingDown, v.latency
	path := strings.TrimPrefix(req.URL.Path, "/v1/")
	hang := v.hang[path] > 0
	if hang {
		v.hang[path]--
	}
	v.mu.Unlock()
	if hang {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	if err := req.Context().Err(); err != nil {
		return nil, err // as a real transport: nothing is sent
	}
	if down || req.URL.Host == "active.test" && activeDown {
		v.mu.Lock()
		v.refused++
		v.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	rec := httptest.NewRecorder()
	if standby && req.URL.Host != "active.test" || steppingDown && req.URL.Host == "active.test" {
		loc := *req.URL
		loc.Host = "active.test"
		if req.URL.Host == "active.test" {
			loc.Host = "next.test"
		}
		rec.Header().Set("Location", loc.String())
		rec.WriteHeader(http.StatusTemporaryRedirect)
		resp := rec.Result()
		resp.Request = req
		return resp, nil
	}
	v.ServeHTTP(rec, req)
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

func (v *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var body map[string]any
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.UseNumber()
		_ = d.Decode(&body)
	}
	now := time.Now()
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	if path == "auth/kubernetes/login" {
		if str(body["jwt"]) == "" || str(body["role"]) == "" {
			vaultError(w, 400, "missing jwt or role")
			return
		}
		v.loginTries++
		if a, ok := v.answers[path]; ok {
			vaultError(w, a.code, a.msg)
			return
		}
		if v.failLogin {
			vaultError(w, 503, "auth backend unavailable")
			return
		}
		v.logins++
		reply(w, map[string]any{"auth": v.authJSON(v.newToken(now), now)})
		return
	}
	t := v.tokens[r.Header.Get("X-Vault-Token")]
	v.requests++
	if t == nil || t.revoked || !now.Before(t.expiry) {
		v.denied++
		vaultError(w, 403, invalidToken)
		return
	}
	v.asked[path]++
	if v.onRequest != nil {
		v.onRequest(path)
	}
	if a, ok := v.answers[path]; ok {
		vaultError(w, a.code, a.msg)
		return
	}
	switch {
	case path == "auth/token/lookup-self":

		reply(w, map[string]any{"data": map[string]any{
			"accessor": t.accessor, "ttl": int(t.expiry.Sub(now).Seconds()), "creation_ttl": int(t.ttl.Seconds()),
			"renewable": true, "explicit_max_ttl": 0, "issue_time": t.issued.Format(time.RFC3339Nano), "period": int(v.tokenPeriod.Seconds()),
			"expire_time": t.expiry.Format(time.RFC3339Nano), "policies": []string{"default", "app"},
		}})
	case path == "auth/token/renew-self" && t.accessor == "":
		vaultError(w, 400, "batch tokens cannot be renewed")
	case path == "auth/token/renew-self":
		v.tokenRenewals++
		inc := seconds(body["increment"])
		if inc == 0 {
			inc = t.ttl
		}
		var warnings []string
		if v.tokenPeriod > 0 {
			t.expiry = now.Add(v.tokenPeriod)
		} else {
			t.expiry = earliest(now.Add(inc), t.issued.Add(t.max))
			if t.expiry.Before(now.Add(inc)) {
				warnings = append(warnings, fmt.Sprintf("TTL of %q exceeded the effective max_ttl of %q; TTL value is capped accordingly", inc, t.expiry.Sub(now)))
			}
		}
		reply(w, map[string]any{"auth": v.authJSON(t, now), "warnings": warnings})
	case path == "auth/token/revoke-self":
		t.revoked = true
		w.WriteHeader(204)
	case strings.HasPrefix(path, "database/creds/") && v.failCreds:
		vaultError(w, 503, "database plugin unavailable")
	case strings.HasPrefix(path, "database/creds/"):
		v.n++
		v.issued++
		l := &fakeLease{
			id: fmt.Sprintf("%s/lease%d", path, v.n), path: path, token: t.token,
			username: fmt.Sprintf("v-app-%d", v.n), password: fmt.Sprintf("pw-%d-topsecret", v.n),
			ttl: v.leaseTTL, max: v.leaseMax, issued: now, expiry: now.Add(v.leaseTTL),
		}
		v.leases[l.id] = l
		reply(w, map[string]any{
			"lease_id": l.id, "lease_duration": int(l.ttl.Seconds()), "renewable": true,
			"data": map[string]any{"username": l.username, "password": l.password},
		})
	case strings.HasPrefix(path, "database/static-creds/"):
		if v.staticRotated.IsZero() {
			v.staticRotated = now
		}
		for !now.Before(v.staticRotated.Add(v.staticPeriod + v.staticDelay)) {
			v.staticRotated = v.staticRotated.Add(v.staticPeriod + v.staticDelay)
			v.staticN++
		}
		reply(w, map[string]any{"data": map[string]any{
			"username": "static-user", "password": fmt.Sprintf("static-pw-%d-topsecret", v.staticN),
			"ttl":                 max(0, int(v.staticRotated.Add(v.staticPeriod).Sub(now).Seconds())),
			"last_vault_rotation": v.staticRotated.Format(time.RFC3339Nano), "rotation_period": int(v.staticPeriod.Seconds()),
		}})
	case strings.HasPrefix(path, "secret/data/"):
		v.kvReads++
		data := v.kv[path]
		if data == nil {
			reply404(w)
			return
		}
		reply(w, map[string]any{"data": map[string]any{"data": data, "metadata": map[string]any{"version": 1}}})
	case path == "sys/leases/renew":
		v.leaseRenewals++
		if v.denyLeaseRenew {
			vaultError(w, 403, "permission denied")
			return
		}
		l := v.lease(str(body["lease_id"]), now)
		if l == nil {
			vaultError(w, 400, "lease not found")
			return
		}
		inc := seconds(body["increment"])
		if inc == 0 {
			inc = l.ttl
		}
		l.expiry = earliest(now.Add(inc), l.issued.Add(l.max))
		reply(w, map[string]any{"lease_id": l.id, "lease_duration": int(l.expiry.Sub(now).Seconds()), "renewable": true})
	case path == "sys/leases/lookup":
		l := v.lease(str(body["lease_id"]), now)
		if l == nil {
			vaultError(w, 400, "invalid lease")
			return
		}
		reply(w, map[string]any{"data": map[string]any{"id": l.id, "ttl": int(l.expiry.Sub(now).Seconds()), "renewable": true}})
	case path == "sys/leases/revoke":
		if l := v.leases[str(body["lease_id"])]; l != nil {
			l.revoked = true
		}
		w.WriteHeader(204)
	default:
		reply404(w)
	}
}

func (v *fakeVault) newToken(now time.Time) *fakeToken {
	v.n++
	accessor := fmt.Sprintf("accessor%d", v.n)
	if v.batch {
		accessor = ""
	}
	t := &fakeToken{
		token: fmt.Sprintf("hvs.faketoken%d", v.n), accessor: accessor,
		ttl: v.tokenTTL, max: v.tokenMax, issued: now, expiry: now.Add(v.tokenTTL),
	}
	v.tokens[t.token] = t
	return t
}

func (v *fakeVault) authJSON(t *fakeToken, now time.Time) map[string]any {
	return map[string]any{
		"client_token": t.token, "accessor": t.accessor, "policies": []string{"default", "app"},
		"lease_duration": int(t.expiry.Sub(now).Seconds()), "renewable": t.accessor != "",
	}
}

// lease returns the lease if it is alive: not revoked, not expired, and
// its token alive (Vault revokes a token's leases with it).
func (v *fakeVault) lease(id string, now time.Time) *fakeLease {
	l := v.leases[id]
	if l == nil || l.revoked || !now.Before(l.expiry) {
		return nil
	}
	if t := v.tokens[l.token]; t == nil || t.revoked || !now.Before(t.expiry) {
		return nil
	}
	return l
}

// alive reports whether lease id still works.
func (v *fakeVault) alive(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lease(id, time.Now()) != nil
}

// tokenAlive reports whether the token with this accessor still works.
func (v *fakeVault) tokenAlive(accessor string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, t := range v.tokens {
		if t.accessor == accessor {
			return !t.revoked && time.Now().Before(t.expiry)
		}
	}
	return false
}

// revokeToken revokes a token as an operator would.
func (v *fakeVault) revokeToken(accessor string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, t := range v.tokens {
		if t.accessor == accessor {
			t.revoked = true
		}
	}
}

// count returns how many requests with a token asked for path.
func (v *fakeVault) count(path string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.asked[path]
}

func (v *fakeVault) counts() (logins, issued, leaseRenewals, tokenRenewals int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.logins, v.issued, v.leaseRenewals, v.tokenRenewals
}

// secretValues returns every password and token the fake handed out, to
// check that none reaches a log.
func (v *fakeVault) secretValues() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for _, t := range v.tokens {
		out = append(out, t.token)
	}
	for _, l := range v.leases {
		out = append(out, l.password)
	}
	for i := 0; i <= v.staticN; i++ {
		out = append(out, fmt.Sprintf("static-pw-%d-topsecret", i))
	}
	for _, d := range v.kv {
		for _, x := range d {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func reply404(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(404)
	_, _ = io.WriteString(w, `{"errors":[]}`)
}

// invalidToken is Vault's answer to a revoked, expired or unknown token; a
// live token its policy refuses gets "permission denied" alone.
const invalidToken = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"

func vaultError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
}

// aliveUser reports whether the database user still has a live lease.
func (v *fakeVault) aliveUser(username string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, l := range v.leases {
		if l.username == username {
			return v.lease(id, time.Now()) != nil
		}
	}
	return false
}

// requestsRefused counts the requests refused while v was down.
func (v *fakeVault) requestsRefused() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.refused
}
