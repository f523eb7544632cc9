package renew

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/podlease/podlease/internal/version"
)

// metrics are vault-renew's Prometheus metrics, written in the text
// exposition format by hand: a dozen series do not justify
// prometheus/client_golang, which costs this sidecar ~3 MiB of resident
// memory and ~2.5 MB of binary (measured by make bench). The e2e tests
// parse the output with Prometheus' own parser.
//
// Only podlease's own series: every pod runs a sidecar, so the usual go_*
// and process_* series would multiply across the fleet; cAdvisor already
// reports the container's memory and CPU.
//
// The metric names and labels are an interface: docs/renew.md lists them
// and they do not change.
type metrics struct {
	names                        []string // secret names, in state.json order
	renewals, rotations          map[string]*atomic.Uint64
	failures                     map[operation]map[string]*atomic.Uint64
	tokenRenewals, tokenFailures atomic.Uint64
	logins                       atomic.Uint64
}

// operation is what a failed attempt on a secret was doing: the
// "operation" label of podlease_secret_renewal_failures_total.
type operation string

// Operations on a secret that can fail.
const (
	opRenew   operation = "renew"   // extend the lease
	opRotate  operation = "rotate"  // issue a new credential under the same token
	opReissue operation = "reissue" // issue a new credential under a new token
	opReread  operation = "reread"  // read a secret without a lease again
)

var operations = []operation{opRenew, opRotate, opReissue, opReread}

func newMetrics(names []string) *metrics {
	m := &metrics{names: names, renewals: map[string]*atomic.Uint64{}, rotations: map[string]*atomic.Uint64{}, failures: map[operation]map[string]*atomic.Uint64{}}
	for _, op := range operations {
		m.failures[op] = map[string]*atomic.Uint64{}
	}
	for _, n := range names {
		m.renewals[n], m.rotations[n] = new(atomic.Uint64), new(atomic.Uint64)
		for _, op := range operations {
			m.failures[op][n] = new(atomic.Uint64)
		}
	}
	return m
}

func (m *metrics) renewed(g *group)              { inc(m.renewals, g) }
func (m *metrics) failed(g *group, op operation) { inc(m.failures[op], g) }
func (m *metrics) rotated(g *group)              { inc(m.rotations, g) }

func inc(v map[string]*atomic.Uint64, g *group) {
	for _, sec := range g.secrets {
		if c := v[sec.Name]; c != nil {
			c.Add(1)
		}
	}
}

// write renders every metric as of now.
func (m *metrics) write(w io.Writer, st *status, now time.Time) {
	b := bufio.NewWriter(w)
	defer b.Flush()
	family := func(name, typ, help string) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	sample := func(name, labels string, v float64) {
		b.WriteString(name)
		b.WriteString(labels)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
		b.WriteByte('\n')
	}
	perSecret := func(name, help string, v map[string]*atomic.Uint64) {
		family(name, "counter", help)
		for _, n := range m.names {
			sample(name, secretLabel(n), float64(v[n].Load()))
		}
	}
	_, revoked, tok, secs := st.get()

	family("podlease_secret_expiry_timestamp_seconds", "gauge", "Unix time at which the secret's current credential expires (leased) or Vault rotates it (static credentials); at most the scrape time once Vault said it is gone.")
	for _, s := range secs {
		if !s.expiry.IsZero() {
			sample("podlease_secret_expiry_timestamp_seconds", secretLabel(s.name), s.expiresAt(now))
		}
	}
	perSecret("podlease_secret_renewals_total", "Successful lease renewals, per secret.", m.renewals)
	family("podlease_secret_renewal_failures_total", "counter", "Failed attempts on a secret, per secret and operation: renew, rotate (new credential, same token), reissue (new credential, new token) or reread (secret without a lease).")
	for _, n := range m.names {
		for _, op := range operations {
			sample("podlease_secret_renewal_failures_total", `{secret="`+labelEscaper.Replace(n)+`",operation="`+string(op)+`"}`, float64(m.failures[op][n].Load()))
		}
	}
	perSecret("podlease_secret_rotations_total", "Times a secret's file was rewritten with a new credential or changed data, per secret.", m.rotations)
	if !tok.expiry.IsZero() {
		family("podlease_token_expiry_timestamp_seconds", "gauge", "Unix time at which the Vault token expires; at most the scrape time once Vault said it is gone.")
		sample("podlease_token_expiry_timestamp_seconds", "", tok.expiresAt(now))
	}
	family("podlease_token_renewals_total", "counter", "Successful renewals of the Vault token.")
	sample("podlease_token_renewals_total", "", float64(m.tokenRenewals.Load()))
	family("podlease_token_failures_total", "counter", "Failed lookups, renewals and logins of the Vault token.")
	sample("podlease_token_failures_total", "", float64(m.tokenFailures.Load()))
	family("podlease_logins_total", "counter", "Logins by vault-renew that replaced the Vault token.")
	sample("podlease_logins_total", "", float64(m.logins.Load()))
	family("podlease_revoked", "gauge", "1 once vault-revoke revoked the pod's credentials and vault-renew stopped, else 0.")
	sample("podlease_revoked", "", boolFloat(revoked))
	family("podlease_build_info", "gauge", "Always 1; the version label says which podlease runs.")
	sample("podlease_build_info", `{version="`+labelEscaper.Replace(version.Version)+`"}`, 1)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func secretLabel(name string) string { return `{secret="` + labelEscaper.Replace(name) + `"}` }

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
