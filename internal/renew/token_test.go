package renew

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestPeriodicTokenIsRenewedForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.tokenTTL, v.tokenPeriod = 10*time.Second, 10*time.Second
		f := newFixture(t, v, dbSpec)
		acc := f.state().Token.Accessor
		f.start()
		f.appLoop(60 * time.Second)
		if st := f.state(); st.Token.Accessor != acc {
			t.Error("logged in again although a periodic token can be renewed forever")
		}
		if logins, _, _, renewals := v.counts(); logins != 1 || renewals < 8 {
			t.Errorf("%d logins, %d token renewals in 60s; want vault-init's login and a renewal every ~6.6s", logins, renewals)
		}
		if strings.Contains(f.logs.String(), "max TTL") {
			t.Errorf("the logs speak of a max TTL for a periodic token:\n%s", f.logs)
		}
		f.stop()
	})
}

func TestRevokedTokenLogsInAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL = 10 * time.Second
		f := newFixture(t, v, dbSpec)
		acc := f.state().Token.Accessor
		f.start()
		time.Sleep(2 * time.Second)
		v.revokeToken(acc) // its lease goes with it
		time.Sleep(5 * time.Second)
		st := f.state()
		if st.Token.Accessor == acc {
			t.Fatal("still on the revoked token")
		}
		if user, _ := f.creds("db"); !v.aliveUser(user) {
			t.Fatal("the file does not hold a working credential")
		}
		if len(st.Retiring) != 0 {
			t.Errorf("retiring = %+v; the revoked token's lease needs no revocation", st.Retiring)
		}
		f.stop()
	})
}

// TestTokenID: tokens are told apart by accessor; batch tokens have none,
// and their id must differ per token and reveal nothing of it.
func TestTokenID(t *testing.T) {
	t.Parallel()
	const a, b = "hvb.AAAAAQJfirst-batch-token-text", "hvb.AAAAAQJsecond-batch-token-text"
	if got := tokenID("acc-1", a); got != "acc-1" {
		t.Errorf("service token id = %q; want its accessor", got)
	}
	ida, idb := tokenID("", a), tokenID("", b)
	if ida == idb || ida == "" {
		t.Errorf("batch token ids %q and %q; want distinct", ida, idb)
	}
	if ida != tokenID("", a) {
		t.Error("a batch token's id is not stable")
	}
	for _, id := range []string{ida, idb} {
		if !strings.HasPrefix(id, "batch-") || strings.Contains(a, id[6:]) || strings.Contains(b, id[6:]) {
			t.Errorf("batch token id %q: want batch-HASH, nothing of the token", id)
		}
	}
}
