package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// TestPodStartCostOnVault counts, in Vault's own audit log, the requests
// one pod with one leased secret makes at start: vault-init's login and
// read, and at most one by vault-renew, which has the token's TTL from
// state.json. With a token max TTL shorter than the lease, the warning
// still comes at start, from that one request.
func TestPodStartCostOnVault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, role string
		tokenMax   time.Duration // 0: the bed's role
		warn       bool
	}{
		{name: "token outlives the lease", role: testbed.Role},
		{name: "token max TTL shorter than the lease", role: "start-cost-short", tokenMax: 25 * time.Second, warn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.tokenMax > 0 {
				if err := bed.CreateK8sRole(tc.role, tc.tokenMax, tc.tokenMax, testbed.Policy); err != nil {
					t.Fatal(err)
				}
			}
			audit := enableAuditFile(t)
			p := newPod(t)
			p.mustInit("--role", tc.role, "--secret", "db=database/creds/"+testbed.DBRole)
			st, err := state.Load(p.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			renewStart := time.Now()
			sc := startRenewSidecar(t, p)
			time.Sleep(2 * time.Second) // what vault-renew does at start is done; its first renewal is minutes away
			const warning = "the token's max TTL is shorter than the leases it holds"
			if warned := strings.Contains(sc.stderr.String(), warning); warned != tc.warn {
				t.Errorf("warning at start about the token's max TTL: %v; want %v\n%s", warned, tc.warn, sc.stderr)
			}

			var initReqs, renewReqs []string
			for _, e := range audit.entries(t) {
				switch {
				case e.Type == "response" && e.Auth.Accessor == st.Token.Accessor && strings.HasSuffix(e.Request.Path, "/login"):
					initReqs = append(initReqs, e.key()) // the login that created the token
				case e.Type != "request" || e.Auth.Accessor != st.Token.Accessor:
				case e.Time.Before(renewStart):
					initReqs = append(initReqs, e.key())
				default:
					renewReqs = append(renewReqs, e.key())
				}
			}
			if len(initReqs) != 2 {
				t.Errorf("vault-init's requests: %v; want its login and its read", initReqs)
			}
			if len(renewReqs) > 1 {
				t.Errorf("vault-renew's requests at start: %v; want at most one", renewReqs)
			}
			figure(t, "cost", "pod start with one leased secret (%s): %d requests (vault-init %v, vault-renew %v)", tc.name, len(initReqs)+len(renewReqs), initReqs, renewReqs)
			sc.mustExitPromptly(t)
			if r := p.revoke(); r.code != 0 {
				t.Errorf("vault-revoke exited %d:\n%s", r.code, r.stderr)
			}
		})
	}
}

// auditFile is a file audit device of the test's own on the bed's Vault.
type auditFile struct{ path string }

// auditRecord is the part of a Vault audit entry the test reads.
type auditRecord struct {
	Type string    `json:"type"` // "request" or "response"
	Time time.Time `json:"time"`
	Auth struct {
		Accessor string `json:"accessor"`
	} `json:"auth"`
	Request struct {
		Operation string `json:"operation"`
		Path      string `json:"path"`
	} `json:"request"`
}

func (e auditRecord) key() string { return e.Request.Operation + " " + e.Request.Path }

// enableAuditFile enables a file audit device that logs accessors in
// clear (secrets stay HMACed) until the test ends. Other tests' requests
// land in it too: readers pick theirs by accessor.
func enableAuditFile(t *testing.T) *auditFile {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	name := "start-cost-" + strings.NewReplacer("/", "-", " ", "-").Replace(strings.ToLower(t.Name()))
	err := bed.Root().Sys().EnableAuditWithOptionsWithContext(context.Background(), name, &api.EnableAuditOptions{
		Type:    "file",
		Options: map[string]string{"file_path": path, "hmac_accessor": "false"},
	})
	if err != nil {
		t.Fatalf("enable a file audit device: %v", err)
	}
	// Before the temporary dir goes: Vault refuses requests it cannot audit.
	t.Cleanup(func() {
		if err := bed.Root().Sys().DisableAuditWithContext(context.Background(), name); err != nil {
			t.Errorf("disable the audit device %s: %v", name, err)
		}
	})
	return &auditFile{path: path}
}

// entries reads every entry logged so far.
func (a *auditFile) entries(t *testing.T) []auditRecord {
	t.Helper()
	f, err := os.Open(a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var e auditRecord
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit log line: %v", err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
