package e2e

// What the documentation quotes, checked against the real thing: Vault's
// login refusals in docs/troubleshooting.md, the sidecar's memory figures
// in the README and docs/renew.md.

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/podlease/podlease/e2e/testbed"
)

// TestDocsLoginRefusals reproduces the kubernetes auth method's
// refusals against the real Vault (a projected token whose audience is not
// the role's, a service account or a namespace the role does not bind),
// and checks that docs/troubleshooting.md quotes what vault-init then
// prints, word for word.
func TestDocsLoginRefusals(t *testing.T) {
	t.Parallel()
	doc := testbed.ReadFile(t, filepath.Join("..", "docs", "troubleshooting.md"))
	for _, tc := range []struct {
		name string
		tok  testbed.ServiceAccountToken
	}{
		{"wrong audience", testbed.ServiceAccountToken{Namespace: testbed.Namespace, ServiceAccount: testbed.ServiceAccount, Audiences: []string{"https://kubernetes.default.svc.cluster.local"}}},
		{"service account not bound", testbed.ServiceAccountToken{Namespace: testbed.Namespace, ServiceAccount: "not-bound"}},
		{"namespace not bound", testbed.ServiceAccountToken{Namespace: "not-bound", ServiceAccount: testbed.ServiceAccount}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPod(t)
			p.jwtFile = filepath.Join(p.dir, "sa", "refused")
			jwt := bed.SignServiceAccountToken(tc.tok)
			noteSecret(jwt)
			if err := os.WriteFile(p.jwtFile, []byte(jwt), 0o600); err != nil {
				t.Fatal(err)
			}
			r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/app"), p.env...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", r.code, r.stderr)
			}
			m := regexp.MustCompile(`log in with kubernetes auth at auth/kubernetes as role "app": (.*?) \(HTTP 403\)`).FindStringSubmatch(strings.ReplaceAll(r.stderr, `\"`, `"`))
			if m == nil {
				t.Fatalf("no refused login in the output:\n%s", r.stderr)
			}
			if !strings.Contains(doc, "`"+m[1]+" (HTTP 403)`") {
				t.Errorf("docs/troubleshooting.md does not quote what Vault 1.21 answers: %q", m[1]+" (HTTP 403)")
			}
		})
	}
}

// TestDocsMemoryFigures: README and docs/renew.md quote the sidecar's
// memory from the last `make bench` (bench/results.md) and from nowhere
// else; the attribution that follows in docs/renew.md ("Page by page")
// quotes bench/resident.md's table and names the command of each other
// figure.
func TestDocsMemoryFigures(t *testing.T) {
	t.Parallel()
	bench := testbed.ReadFile(t, filepath.Join("..", "bench", "results.md"))
	m := regexp.MustCompile(`\| vault-renew, renewing \(20s\) \| ([\d.]+ MiB) \(([\d.]+ MiB) \+ ([\d.]+ MiB)\)`).FindStringSubmatch(bench)
	idle := regexp.MustCompile(`\| vault-renew, idle \(1h\) \| ([\d.]+ MiB)`).FindStringSubmatch(bench)
	if m == nil || idle == nil {
		t.Fatal("bench/results.md has no vault-renew memory row")
	}
	readme := testbed.ReadFile(t, filepath.Join("..", "README.md"))
	renew := testbed.ReadFile(t, filepath.Join("..", "docs", "renew.md"))
	if !strings.Contains(readme, "vault-renew **"+m[1]+"**") {
		t.Errorf("README does not quote bench/results.md's sidecar memory, %s", m[1])
	}
	section := renew[strings.Index(renew, "## Memory"):]
	attribution := section[strings.Index(section, "Page by page"):]
	section = section[:strings.Index(section, "Page by page")]
	for _, want := range []string{"| " + m[1] + " | " + m[2] + " | " + m[3] + " |", "| " + idle[1] + " |", "make bench"} {
		if !strings.Contains(section, want) {
			t.Errorf("docs/renew.md's Memory section lacks %q from bench/results.md", want)
		}
	}
	// Every sidecar figure in the two documents is one bench/results.md has.
	for name, text := range map[string]string{"README.md": readme, "docs/renew.md": section} {
		for _, fig := range regexp.MustCompile(`(\d+\.\d+)(?:-\d+\.\d+)? MiB`).FindAllString(text, -1) {
			if !strings.Contains(bench, fig) {
				t.Errorf("%s quotes %q, which bench/results.md does not have", name, fig)
			}
		}
	}
	// The attribution table's VmRSS row is bench/resident.md's
	// (`bench --only=resident`), process by process.
	resident := testbed.ReadFile(t, filepath.Join("..", "bench", "resident.md"))
	vmrss := regexp.MustCompile(`\| \*\*VmRSS\*\* \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \|`).FindStringSubmatch(attribution)
	if vmrss == nil {
		t.Fatal("docs/renew.md's attribution table has no VmRSS row")
	}
	for i, proc := range []string{"vault-renew", "vault-renew idle", "floor", "floorhttp"} {
		if row := "| " + proc + " | " + vmrss[i+1] + " |"; !strings.Contains(resident, row) {
			t.Errorf("docs/renew.md's attribution says %s KiB for %s; bench/resident.md has no row %q", vmrss[i+1], proc, row)
		}
	}
}
