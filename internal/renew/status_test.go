package renew

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestReadyzAndMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 100 * time.Second
		v.kv["secret/data/app"] = map[string]any{"api_key": "kv-secret-value"}
		f := newFixture(t, v, dbSpec, spec{name: "app", path: "secret/data/app", format: "env"})
		f.start()
		time.Sleep(time.Second)

		if code, body := f.get("/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("/healthz = %d %q", code, body)
		}
		if code, body := f.get("/readyz"); code != 200 || body != "ready\n" {
			t.Errorf("/readyz = %d %q", code, body)
		}
		// Expiries are absolute Unix times, so that an alert can compare
		// them with time().
		now := float64(time.Now().Unix())
		for sample, want := range map[string]float64{
			`podlease_secret_expiry_timestamp_seconds{secret="db"}`:                   now + 99,
			`podlease_secret_renewals_total{secret="db"}`:                             0,
			`podlease_secret_renewal_failures_total{secret="db",operation="renew"}`:   0,
			`podlease_secret_renewal_failures_total{secret="db",operation="rotate"}`:  0,
			`podlease_secret_renewal_failures_total{secret="db",operation="reissue"}`: 0,
			`podlease_secret_renewal_failures_total{secret="db",operation="reread"}`:  0,
			`podlease_secret_rotations_total{secret="db"}`:                            0,
			`podlease_secret_rotations_total{secret="app"}`:                           0,
			`podlease_secret_renewal_failures_total{secret="app",operation="reread"}`: 0,
			`podlease_token_expiry_timestamp_seconds`:                                 now + 3599,
			`podlease_token_renewals_total`:                                           1,
			`podlease_logins_total`:                                                   0,
			`podlease_revoked`:                                                        0,
		} {
			if got := f.metric(sample); got != want {
				t.Errorf("%s = %v; want %v", sample, got, want)
			}
		}
		_, body := f.get("/metrics")
		if !strings.Contains(body, `podlease_build_info{version="dev"} 1`) {
			t.Error("/metrics has no podlease_build_info")
		}
		for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
			if !strings.HasPrefix(line, "podlease_") && !strings.HasPrefix(line, "# HELP podlease_") && !strings.HasPrefix(line, "# TYPE podlease_") {
				t.Errorf("/metrics has a series that is not podlease's: %s", line)
			}
		}
		if strings.Contains(body, `podlease_secret_expiry_timestamp_seconds{secret="app"}`) {
			t.Error("a KV secret has no expiry, but /metrics reports one")
		}

		// The lease's final stretch: min(1m, TTL/4) = 25s before expiry.
		v.setDown(true)
		time.Sleep(75 * time.Second)
		code, body := f.get("/readyz")
		if code != 503 || body != "not ready: expired or about to expire: db\n" {
			t.Errorf("/readyz 24s before the lease expires = %d %q; want 503 naming db", code, body)
		}
		v.setDown(false)
		f.stop()
	})
}

// TestNotReadyBeforeTheStateIsRead: the HTTP server answers from the
// start; until the loop has published what state.json holds (a
// credential may have expired while the sidecar was down), the pod is
// not ready.
func TestNotReadyBeforeTheStateIsRead(t *testing.T) {
	t.Parallel()
	st := &status{}
	if why := st.readiness(time.Now()); !strings.HasPrefix(why, "starting") {
		t.Errorf("readiness before the first publish = %q; want not ready, starting", why)
	}
}
