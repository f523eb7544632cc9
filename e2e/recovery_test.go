package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// TestRenewRecoversAfterLoss cuts Vault off (connections refused) until
// the pod's lease has expired and a good while longer, so that a backoff
// would have grown, then restores it: the app must have a working
// credential again within a few seconds, since vault-renew retries a lost
// credential at most 3s apart. The figure is the time from Vault's return
// to a file whose credential logs in to PostgreSQL.
func TestRenewRecoversAfterLoss(t *testing.T) {
	t.Parallel()
	const ttl = 8 * time.Second
	const role = "rcvlost"
	p, fp, prefix := podBehindFaultProxy(t, role, ttl)
	t0 := time.Now()
	file := filepath.Join(p.secretsDir, "db")
	user0, pass0 := dbCreds(t, file)
	s := start(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--log-level", "debug"}, p.env...)

	time.Sleep(time.Until(t0.Add(2 * time.Second)))
	if err := fp.Set(testbed.Rule{Fault: testbed.Refuse}); err != nil {
		t.Fatal(err)
	}
	// The lease ends at ttl; 20s more of outage lets a backoff grow to
	// its longest.
	time.Sleep(time.Until(t0.Add(ttl + 20*time.Second)))
	if err := pgLogin(user0, pass0); err == nil {
		t.Fatal("the first credential still logs in after its lease ended: the outage did not cost it")
	}
	if err := fp.Clear(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	var took time.Duration
	for {
		if user, pass := dbCreds(t, file); user != user0 && pgLogin(user, pass) == nil {
			took = time.Since(back)
			break
		}
		if time.Since(back) > time.Minute {
			t.Fatalf("no working credential a minute after Vault came back:\n%s", s.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	live := leasesUnder(t, prefix)
	if len(live) != 1 {
		t.Errorf("live leases %v; want exactly the new one", live)
	}
	if m := mentionsAll(s.stderr.String(), "lease expired before it could be renewed", "replaced the credential", `old_lease_expires_in="expired `); len(m) > 0 {
		t.Errorf("vault-renew log lacks %q:\n%s", m, s.stderr.String())
	}
	figure(t, "faults", "vault-renew after a lost credential (Vault refused connections for %s, the %s lease lost %s before Vault came back): a working credential in the file %s after Vault answered again",
		(ttl + 18*time.Second).Round(time.Second), ttl, (20 * time.Second).Round(time.Second), took.Round(10*time.Millisecond))
	// Generous for a loaded 2-core machine: the retries are at most 3s
	// apart, then one read and one write.
	if took > 5*time.Second {
		t.Errorf("a working credential %s after Vault came back; want under 5s", took)
	}
}
