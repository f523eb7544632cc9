package main

import (
	"math"
	"testing"
	"time"
)

func TestLeasesMade(t *testing.T) {
	for _, tc := range []struct {
		name string
		mix  requestMix
		want int
	}{
		{"vault-init", requestMix{"update auth/kubernetes/login": 1, "read database/creds/app": 1}, 2},
		{"vault-renew at start", requestMix{"read auth/token/lookup-self": 1, "update auth/token/renew-self": 1}, 0},
		{"Agent init", requestMix{"read database/creds/app": 1, "read sys/internal/ui/mounts/database/creds/app": 1,
			"update auth/kubernetes/login": 1, "update auth/token/renew-self": 1, "update sys/leases/renew": 1}, 2},
		{"none", requestMix{}, 0},
	} {
		if got := leasesMade(tc.mix); got != tc.want {
			t.Errorf("%s: leasesMade = %d; want %d", tc.name, got, tc.want)
		}
	}
}

func TestMargins(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := &sidecar{ttl: 20 * time.Second, renewedAt: map[string][]time.Time{
		"token": {t0, t0.Add(14 * time.Second), t0.Add(28 * time.Second), t0.Add(41 * time.Second)},
		"lease": {t0, t0.Add(12 * time.Second)},
	}}
	other := &sidecar{ttl: 10 * time.Second, renewedAt: map[string][]time.Time{
		"token": {t0, t0.Add(7500 * time.Millisecond)},
		"lease": {t0, t0.Add(7 * time.Second), t0.Add(14 * time.Second)},
	}}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	for _, tc := range []struct {
		name       string
		ss         []*sidecar
		med, least float64
	}{
		// Left at renewal: token 0.3, 0.3, 0.35; lease 0.4.
		{"one sidecar", []*sidecar{s}, 0.325, 0.3},
		// And the other's: token 0.25; lease 0.3, 0.3.
		{"a fleet, pooled", []*sidecar{s, other}, 0.3, 0.25},
	} {
		med, least, ok := margins(tc.ss...)
		if !ok {
			t.Fatalf("%s: margins not ok with every credential renewed at least twice", tc.name)
		}
		if !near(med, tc.med) || !near(least, tc.least) {
			t.Errorf("%s: margins = median %v, least %v; want %v, %v", tc.name, med, least, tc.med, tc.least)
		}
	}
	other.renewedAt["lease"] = other.renewedAt["lease"][:1]
	if _, _, ok := margins(s, other); ok {
		t.Error("margins ok with one sidecar's lease renewed once")
	}
	if _, _, ok := margins(s, &sidecar{ttl: time.Second}); ok {
		t.Error("margins ok with a sidecar that renewed nothing")
	}
	if _, _, ok := margins(); ok {
		t.Error("margins ok with no sidecar")
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 42666: "42,666", 1000000: "1,000,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q; want %q", n, got, want)
		}
	}
}
