package e2e

// Helpers the test files share (the pod harness, TestMain and the secret
// hygiene scan are in main_test.go): the figures record, runs with process
// options, lease accounting with the root token, reads as root.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"

	"github.com/podlease/podlease/e2e/testbed"
)

// figure prints one measured figure of the reliability suite and appends
// it to the figures record: JSON lines in $PODLEASE_FIGURES, or
// $TMPDIR/podlease-e2e-figures.jsonl, rewritten by every test run.
// docs/reliability.md summarises them.
func figure(t *testing.T, area, format string, args ...any) {
	t.Helper()
	text := fmt.Sprintf(format, args...)
	t.Logf("FIGURE [%s] %s", area, text)
	figures.Lock()
	defer figures.Unlock()
	if figures.f == nil && figures.err == nil {
		path := os.Getenv("PODLEASE_FIGURES")
		if path == "" {
			path = filepath.Join(os.TempDir(), "podlease-e2e-figures.jsonl")
		}
		figures.f, figures.err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	}
	if figures.err != nil {
		t.Errorf("figures record: %v", figures.err)
		return
	}
	b, _ := json.Marshal(map[string]string{
		"area": area, "test": t.Name(), "figure": text,
		"at": time.Now().UTC().Format(time.RFC3339),
	})
	if _, err := figures.f.Write(append(b, '\n')); err != nil {
		t.Errorf("figures record: %v", err)
	}
}

var figures struct {
	sync.Mutex
	f   *os.File
	err error
}

// runOpts are the process options runWith adds to run's.
type runOpts struct {
	env     []string
	cred    *syscall.Credential // run as another user
	timeout time.Duration       // kill after this long (default 2m): a hang fails the test
}

// runWith is run with process options. Its output joins the hygiene scan.
func runWith(t *testing.T, name string, args []string, o runOpts) result {
	t.Helper()
	return runBinary(t, bins[name], args, o)
}

// runBinary runs the podlease binary at path (a copy of one of bins).
func runBinary(t *testing.T, path string, args []string, o runOpts) result {
	t.Helper()
	name := filepath.Base(path)
	if o.timeout == 0 {
		o.timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	home := t.TempDir()
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + home}, o.env...)
	if o.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	var stdout, stderr testbed.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	keepOutput(t.Name()+" "+name, &stderr)
	keepOutput(t.Name()+" "+name+" (stdout)", &stdout)
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("%s still running after %s: killed (it must never hang)\n%s", name, o.timeout, r.stderr)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	if testing.Verbose() {
		t.Logf("%s exited %d after %s; stderr:\n%s", name, r.code, r.elapsed.Round(time.Millisecond), r.stderr)
	}
	return r
}

// exitCode is the exit status of a started process that has ended.
func (s *started) exitCode() int {
	<-s.done
	return s.cmd.ProcessState.ExitCode()
}

// startAnswered are the lines vault-renew logs once Vault has answered its
// one request at start (or once it knows it needs none).
var startAnswered = []string{
	`msg="renewed token"`,
	"token renewal came back shorter than asked",
	"the token cannot be renewed",
	"the token never expires",
}

// waitStartAnswered waits until vault-renew's log shows the answer to its
// request at start, so that a test goes on from that event rather than
// from a guess of how long a loaded machine takes to get there.
func waitStartAnswered(t *testing.T, s *started) {
	t.Helper()
	const within = 30 * time.Second
	for end := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		out := s.stderr.String()
		if slices.ContainsFunc(startAnswered, func(line string) bool { return strings.Contains(out, line) }) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("vault-renew's request at start not answered within %s:\n%s", within, out)
		}
	}
}

// leasesLeft waits up to within for Vault to hold no lease under prefix
// (revocation through a token runs in the background), and returns what
// is left then, less the leases Vault itself failed to roll back (see
// vaultRollbacks), which it logs and force-revokes. Only for leases that
// should all be gone: it revokes what it checks.
func leasesLeft(t *testing.T, prefix string, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(leasesUnder(t, prefix)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	left := leasesUnder(t, prefix)
	if len(left) == 0 {
		return nil
	}
	excusable := vaultRollbacks(t, strings.TrimSuffix(prefix, "/"))
	if excusable == 0 {
		return left
	}
	var kept []string
	for _, id := range left {
		err := bed.Root().Sys().RevokeWithContext(context.Background(), id)
		if excusable == 0 || err == nil || !strings.Contains(err.Error(), "does not exist (SQLSTATE 42704)") {
			kept = append(kept, id)
			continue
		}
		excusable--
		if _, ferr := bed.Root().Logical().Write("sys/leases/revoke-force/"+id, nil); ferr != nil {
			t.Errorf("revoke-force %s: %v", id, ferr)
		}
		t.Logf("lease %s: left by Vault's failed rollback of a read whose client vanished (its database user is gone, its revocation fails: %s); force-revoked, not counted", id, vaultclient.Cause(err))
	}
	return kept
}

// vaultRollbacks counts the leases under path (such as
// "database/creds/app") that the bed's Vault, by its log, failed to roll
// back. When the client of a read goes away (killed, or it gave up)
// while Vault registers the new lease, Vault revokes the secret it just
// issued (the database user is dropped) and then deletes the lease entry
// with the request's context, which is canceled by then: when the entry
// was already stored, it stays, under no token and with no expiry timer,
// naming a user that no longer exists. Vault logs "failed to register
// lease" with "failed to delete lease entry"; when the entry had not been
// stored yet ("failed to persist lease entry"), nothing is left.
func vaultRollbacks(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(bed.VaultLog)
	if err != nil {
		t.Fatalf("read Vault's log: %v", err)
	}
	return rollbacksIn(string(b), path)
}

func rollbacksIn(log, path string) int {
	n := 0
	for _, entry := range strings.Split(log, "[ERROR] core: failed to register lease: request_path=")[1:] {
		entry, _, _ = strings.Cut(entry, "\n20") // up to the next timestamped line
		if strings.HasPrefix(entry, path+"\n") && strings.Contains(entry, "failed to delete lease entry") && !strings.Contains(entry, "failed to persist lease entry") {
			n++
		}
	}
	return n
}

// leasesUnder lists the live lease ids under prefix (such as
// "database/creds/faults/"), as Vault's sys/leases/lookup lists them.
func leasesUnder(t *testing.T, prefix string) []string {
	t.Helper()
	prefix = strings.TrimSuffix(prefix, "/") + "/"
	s, err := bed.Root().Logical().ListWithContext(context.Background(), "sys/leases/lookup/"+prefix)
	if err != nil {
		t.Fatalf("list leases under %s: %v", prefix, err)
	}
	return leaseIDs(s, prefix)
}

// leaseIDs is the sorted lease ids of a sys/leases/lookup/PREFIX listing.
func leaseIDs(s *api.Secret, prefix string) []string {
	var ids []string
	if s != nil {
		keys, _ := s.Data["keys"].([]any)
		for _, k := range keys {
			ids = append(ids, prefix+k.(string))
		}
	}
	slices.Sort(ids)
	return ids
}

// leaseTTL returns the remaining TTL of a lease, or an error if Vault does
// not know it (expired or revoked).
func leaseTTL(id string) (time.Duration, error) {
	s, err := lookupLease(id)
	if err != nil {
		return 0, err
	}
	n, _ := s.Data["ttl"].(json.Number)
	secs, _ := n.Int64()
	return time.Duration(secs) * time.Second, nil
}

// lookupLease is Vault's record of lease id.
func lookupLease(id string) (*api.Secret, error) {
	return bed.Root().Logical().WriteWithContext(context.Background(), "sys/leases/lookup", map[string]any{"lease_id": id})
}

// leaseIssued is when Vault issued lease id.
func leaseIssued(id string) (time.Time, error) {
	s, err := lookupLease(id)
	if err != nil {
		return time.Time{}, err
	}
	issued, _ := s.Data["issue_time"].(string)
	return time.Parse(time.RFC3339Nano, issued)
}

// revokePrefix revokes every lease under prefix (test clean-up).
func revokePrefix(t *testing.T, prefix string) {
	t.Helper()
	if err := bed.Root().Sys().RevokePrefixWithContext(context.Background(), prefix); err != nil {
		t.Errorf("revoke-prefix %s: %v", prefix, err)
	}
}

// assertCompleteSet checks what vault-init promises after exit 0: a state
// that parses, a live-looking token file, and every secret file present
// and the very file state.json records (its inode). It returns the state.
func assertCompleteSet(t *testing.T, p *pod) *state.State {
	t.Helper()
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatalf("state: %v", err)
	}
	if tok := p.token(); tok == "" {
		t.Fatal("empty token file")
	}
	for _, s := range st.Secrets {
		if _, err := os.Stat(s.File); err != nil {
			t.Fatalf("secret %q: %v", s.Name, err)
		}
		if got := state.Inode(s.File); got != s.FileInode {
			t.Errorf("secret file %s is not the file state.json records (inode %d, state says %d)", s.File, got, s.FileInode)
		}
	}
	return st
}

// assertNothingLeft checks that a failed vault-init left no file behind
// but the state dir's lock file.
func assertNothingLeft(t *testing.T, p *pod) {
	t.Helper()
	var left []string
	for _, d := range []string{p.secretsDir, p.stateDir} {
		for _, n := range dirEntries(t, d) {
			if n != ".lock" {
				left = append(left, filepath.Join(d, n))
			}
		}
	}
	if len(left) > 0 {
		t.Errorf("files left behind after a failure: %v", left)
	}
}

// pgLogin checks that user/password logs in to PostgreSQL.
func pgLogin(user, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bed.PGConnect(ctx, user, password)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// mentionsAll returns the strings of want that s lacks.
func mentionsAll(s string, want ...string) []string {
	var missing []string
	for _, w := range want {
		if !strings.Contains(s, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

// concurrently runs f for every case as a subtest, all at the same time,
// and returns when all are done. The cases mostly wait (on timeouts, on
// Vault), and go test's -parallel (GOMAXPROCS: 2 on the CI machine) would
// queue t.Parallel subtests two by two.
func concurrently[C any](t *testing.T, cases []C, name func(C) string, f func(*testing.T, C)) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name(c), func(t *testing.T) { f(t, c) })
		}()
	}
	wg.Wait()
}

// leaksIn counts the noted secrets that text holds.
func leaksIn(text string) int {
	hygiene.Lock()
	defer hygiene.Unlock()
	n := 0
	for s := range hygiene.secrets {
		if strings.Contains(text, s) {
			n++
		}
	}
	return n
}

// maxDuration keeps the largest of durations observed concurrently.
type maxDuration struct {
	mu sync.Mutex
	d  time.Duration
}

func (m *maxDuration) observe(d time.Duration) {
	m.mu.Lock()
	m.d = max(m.d, d)
	m.mu.Unlock()
}

func (m *maxDuration) get() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.d
}

// rootChildToken writes a token with the root policy, valid for the test,
// to a file in dir and returns the file: for reads the bed's app policy
// does not allow.
func rootChildToken(t *testing.T, dir string) string {
	t.Helper()
	s, err := bed.Root().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"root"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	tok := s.Auth.ClientToken
	noteSecret(tok)
	t.Cleanup(func() { bed.Root().Auth().Token().RevokeTree(tok) })
	file := filepath.Join(dir, "root-token")
	if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// initAsRoot runs vault-init for p with args, logged in with a
// rootChildToken (token auth) to read what the app policy does not allow.
func (p *pod) initAsRoot(args ...string) result {
	p.t.Helper()
	return run(p.t, "vault-init", append([]string{"--auth-method", "token", "--token-file", rootChildToken(p.t, p.dir),
		"--secrets-dir", p.secretsDir, "--state-dir", p.stateDir, "--timeout", "30s"}, args...), p.env...)
}

// randomDigits is n random decimal digits, a PIN-like secret value.
func randomDigits(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = '0' + byte(rand.IntN(10))
	}
	return string(b)
}

// writeKV writes fields as a KV v2 secret at path with the root token.
func writeKV(t *testing.T, path string, fields map[string]any) {
	t.Helper()
	if _, err := bed.Root().Logical().WriteWithContext(context.Background(), path, map[string]any{"data": fields}); err != nil {
		t.Fatal(err)
	}
}

// revoke runs vault-revoke for p.
func (p *pod) revoke(args ...string) result {
	p.t.Helper()
	return run(p.t, "vault-revoke", append([]string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, args...), p.env...)
}

// TestRollbacksIn: only a lease entry Vault stored and then failed to
// delete counts, on its own path.
func TestRollbacksIn(t *testing.T) {
	t.Parallel()
	const log = `2026-12-02T05:25:01.209Z [ERROR] core: failed to register lease: request_path=database/creds/app
  error=
  | 3 errors occurred:
  | \t* failed to persist lease entry: context canceled
  | \t* an additional error was encountered deleting any lease associated with the newly-generated secret: failed to delete lease entry: context canceled
  | \t* an additional error was encountered removing lease indexes associated with the newly-generated secret: failed to delete lease index entry: context canceled
2026-12-02T05:25:02.589Z [ERROR] core: failed to register lease: request_path=database/creds/app
  error=
  | 3 errors occurred:
  | \t* failed to persist lease index entry: context canceled
  | \t* an additional error was encountered deleting any lease associated with the newly-generated secret: failed to delete lease entry: context canceled
  | \t* an additional error was encountered removing lease indexes associated with the newly-generated secret: failed to delete lease index entry: context canceled
2026-12-02T05:25:03.000Z [ERROR] core: failed to register lease: request_path=database/creds/app2
  error=
  | \t* failed to persist lease index entry: context canceled
  | \t* an additional error was encountered deleting any lease associated with the newly-generated secret: failed to delete lease entry: context canceled
2026-12-02T05:25:03.632Z [ERROR] core: failed to create token: error="failed to persist accessor index entry: context canceled"
`
	for path, want := range map[string]int{"database/creds/app": 1, "database/creds/app2": 1, "database/creds/ap": 0, "database/creds/other": 0} {
		if got := rollbacksIn(log, path); got != want {
			t.Errorf("rollbacksIn(%s) = %d, want %d", path, got, want)
		}
	}
}
