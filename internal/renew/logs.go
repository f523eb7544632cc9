package renew

// How vault-renew's log lines name things: the Vault node a failed request
// went to, and the time a credential has left.

import (
	"net/url"
	"time"

	"github.com/podlease/podlease/internal/vaultclient"
)

// askedAddr returns the Vault node (scheme://host) a failed request went
// to (vaultclient.Node) and whether it differs from configured, the
// address in state.json. Vault's client follows one redirect, as a
// standby node answers with the active node's address, so an error can
// name a node the pod was never pointed at. addr is "" when the error
// carries no URL.
func askedAddr(err error, configured string) (addr string, redirected bool) {
	addr = vaultclient.Node(err)
	if addr == "" {
		return "", false
	}
	u, uerr := url.Parse(addr)
	c, cerr := url.Parse(configured)
	return addr, uerr == nil && cerr == nil && c.Host != "" && (c.Scheme != u.Scheme || c.Host != u.Host)
}

// where is the log attributes naming the Vault node a failed request
// asked, and the address whose redirect led there when one did.
func (s *sidecar) where(err error) []any {
	addr, redirected := askedAddr(err, s.tok.client.Address())
	switch {
	case addr == "":
		return nil
	case redirected:
		return []any{"vault_addr", addr, "redirected_from", s.tok.client.Address()}
	default:
		return []any{"vault_addr", addr}
	}
}

// warnVault logs a failed Vault request at warning level, naming the node
// it asked.
func (s *sidecar) warnVault(err error, msg string, args ...any) {
	s.log.Warn(msg, append(args, s.where(err)...)...)
}

// warnRetry is warnVault for a failure that r, the failing credential's
// backoff, just counted, as often as r.loud allows.
func (s *sidecar) warnRetry(r *retry, now time.Time, err error, msg string, args ...any) {
	ok, unlogged := r.loud(now)
	if !ok {
		return
	}
	if unlogged > 0 {
		args = append(args, "failures_not_logged", unlogged)
	}
	s.warnVault(err, msg, args...)
}

// until renders the time left before t for logs.
func until(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return max(t.Sub(now), 0).Round(100 * time.Millisecond).String()
}

// lifeLeft renders for logs how long a credential that ends at expiry
// (zero: never) has left; gone says it already stopped working (expired,
// refused, or its token ended), whatever its expiry said.
func lifeLeft(now, expiry time.Time, gone bool) string {
	switch {
	case !expiry.IsZero() && !now.Before(expiry):
		return "expired " + now.Sub(expiry).Round(100*time.Millisecond).String() + " ago"
	case gone:
		return "gone"
	default:
		return until(now, expiry)
	}
}
