package renew

import (
	"strings"
	"testing"
	"time"
)

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

// TestEndsWithToken: a lease that ends with its token is re-issued by the
// next login, not rotated under the same token (a batch token caps its
// leases to its own life).
func TestEndsWithToken(t *testing.T) {
	t.Parallel()
	end := time.Date(2030, 1, 1, 0, 0, 20, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		expiry time.Time
		want   bool
	}{
		{"capped to the token's end", end, true},
		{"a second before (rounding)", end.Add(-time.Second), true},
		{"after it", end.Add(time.Minute), true},
		{"well before it", end.Add(-10 * time.Second), false},
		{"token end unknown", end, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokenEnd := end
			if tc.name == "token end unknown" {
				tokenEnd = time.Time{}
			}
			if got := endsWithToken(tc.expiry, tokenEnd); got != tc.want {
				t.Errorf("endsWithToken = %v; want %v", got, tc.want)
			}
		})
	}
}
