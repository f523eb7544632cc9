// Package e2e runs the built podlease binaries against the real test bed:
// a Vault dev server, a PostgreSQL cluster and the two Kubernetes pieces
// Vault's kubernetes auth needs. One bed serves the whole package.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

var (
	bed  *testbed.Bed
	bins = map[string]string{} // binary name -> path
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	binDir, err := os.MkdirTemp("", "podlease-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if err := buildBinaries(ctx, binDir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build binaries:", err)
		return 1
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "testbed: "+format+"\n", args...) }
	bed, err = testbed.Start(ctx, logf)
	if err != nil {
		// Never skip: a missing Vault or PostgreSQL is a failure to fix
		// (make vault postgres), not a reason to pass.
		fmt.Fprintln(os.Stderr, "e2e: start test bed:", err)
		return 1
	}
	bed.CloseOnSignal()
	code := m.Run()
	bed.Close()
	if leaks := scanForLeaks(); leaks > 0 {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: %d secret(s) issued by the test bed appeared in podlease output (see the lines above)\n", leaks)
		return 1
	}
	// A binary that crashed where its test allows failures (a lenient
	// branch, a later retry that succeeded) is a defect all the same.
	if crashes := scanForCrashes(); crashes > 0 {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: %d podlease output(s) show a Go panic or fatal error (see the lines above)\n", crashes)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: secret hygiene: %d secret values checked against %d captured outputs: 0 leaks\n", numSecrets(), numOutputs())
	return code
}

// buildBinaries builds the three commands the way the Dockerfile and
// `make build` do: static, trimmed, version stamped.
func buildBinaries(ctx context.Context, dir string) error {
	for _, name := range []string{"vault-init", "vault-renew", "vault-revoke"} {
		out := filepath.Join(dir, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
			"-ldflags", "-s -w -X github.com/podlease/podlease/internal/version.Version=e2e",
			"-o", out, "./cmd/"+name)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", name, err, b)
		}
		bins[name] = out
	}
	return nil
}

// Secret hygiene: every secret value a test sees is noted, every output of
// a podlease binary is kept, and TestMain fails the run if any output
// holds any secret.
var hygiene struct {
	sync.Mutex
	secrets map[string]bool
	outputs []capturedOutput
}

type capturedOutput struct {
	what string
	text *testbed.SyncBuffer
}

// noteSecret records a value that must never appear in podlease's output.
func noteSecret(values ...string) {
	hygiene.Lock()
	defer hygiene.Unlock()
	if hygiene.secrets == nil {
		hygiene.secrets = map[string]bool{}
	}
	for _, v := range values {
		if len(v) >= 6 { // shorter values would match by chance
			hygiene.secrets[v] = true
		}
	}
}

func keepOutput(what string, b *testbed.SyncBuffer) {
	hygiene.Lock()
	defer hygiene.Unlock()
	hygiene.outputs = append(hygiene.outputs, capturedOutput{what, b})
}

func numSecrets() int { hygiene.Lock(); defer hygiene.Unlock(); return len(hygiene.secrets) }
func numOutputs() int { hygiene.Lock(); defer hygiene.Unlock(); return len(hygiene.outputs) }

func scanForLeaks() int {
	hygiene.Lock()
	defer hygiene.Unlock()
	leaks := 0
	for _, o := range hygiene.outputs {
		text := o.text.String()
		for s := range hygiene.secrets {
			if strings.Contains(text, s) {
				leaks++
				fmt.Fprintf(os.Stderr, "e2e: LEAK: output of %s holds a secret (%d chars, not shown)\n", o.what, len(s))
			}
		}
	}
	return leaks
}

// crashLine is the first line the Go runtime writes when a program
// panics or dies of a fatal error.
var crashLine = regexp.MustCompile(`(?m)^(panic: |fatal error: ).*$`)

// scanForCrashes names every kept output that shows a crash, with the
// crash's first line, any noted secret in it masked.
func scanForCrashes() int {
	hygiene.Lock()
	defer hygiene.Unlock()
	crashes := 0
	for _, o := range hygiene.outputs {
		line := crashLine.FindString(o.text.String())
		if line == "" {
			continue
		}
		crashes++
		for s := range hygiene.secrets {
			line = strings.ReplaceAll(line, s, "[secret]")
		}
		fmt.Fprintf(os.Stderr, "e2e: CRASH: output of %s: %s\n", o.what, line)
	}
	return crashes
}

// assertNoSecret fails t if out holds any noted secret. It names the
// output, never the secret.
func assertNoSecret(t *testing.T, what, out string) {
	t.Helper()
	hygiene.Lock()
	defer hygiene.Unlock()
	for s := range hygiene.secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s holds a secret value (%d chars)", what, len(s))
		}
	}
}

// pod is one simulated pod: its emptyDir volumes and its projected
// service-account token.
type pod struct {
	t          *testing.T
	dir        string
	secretsDir string
	stateDir   string
	jwtFile    string
	env        []string
}

func newPod(t *testing.T) *pod {
	t.Helper()
	dir := t.TempDir()
	p := &pod{
		t:          t,
		dir:        dir,
		secretsDir: filepath.Join(dir, "secrets"),
		stateDir:   filepath.Join(dir, "state"),
	}
	for _, d := range []string{p.secretsDir, p.stateDir, filepath.Join(dir, "sa")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p.jwtFile = bed.WriteJWT(filepath.Join(dir, "sa"), testbed.Namespace, testbed.ServiceAccount)
	noteSecret(testbed.ReadFile(t, p.jwtFile))
	p.env = []string{"VAULT_ADDR=" + bed.VaultAddr}
	return p
}

// initArgs are vault-init's flags for this pod plus extra.
func (p *pod) initArgs(extra ...string) []string {
	return append([]string{
		"--role", testbed.Role,
		"--jwt-file", p.jwtFile,
		"--secrets-dir", p.secretsDir,
		"--state-dir", p.stateDir,
		"--timeout", "30s",
	}, extra...)
}

// result is one finished run of a binary.
type result struct {
	code    int
	stdout  string
	stderr  string
	elapsed time.Duration
}

// run runs a podlease binary to completion with a minimal environment
// plus env, capturing its output for the hygiene scan; it fails the test
// if the binary is still running after two minutes (runBinary).
func run(t *testing.T, name string, args []string, env ...string) result {
	t.Helper()
	return runWith(t, name, args, runOpts{env: env})
}

// mustInit runs vault-init for p and fails the test unless it exits 0.
func (p *pod) mustInit(extra ...string) result {
	p.t.Helper()
	r := run(p.t, "vault-init", p.initArgs(extra...), p.env...)
	if r.code != 0 {
		p.t.Fatalf("vault-init exited %d:\n%s", r.code, r.stderr)
	}
	noteSecret(p.token())
	return r
}

// token is the Vault token vault-init wrote.
func (p *pod) token() string {
	p.t.Helper()
	return strings.TrimSpace(testbed.ReadFile(p.t, filepath.Join(p.stateDir, "token")))
}

// started is a long-running binary (vault-renew).
type started struct {
	cmd    *exec.Cmd
	stderr *testbed.SyncBuffer
	done   chan struct{}
	err    error
}

// start starts a podlease binary in the background; it is stopped with
// SIGTERM when the test ends.
func start(t *testing.T, name string, args []string, env ...string) *started {
	t.Helper()
	cmd := exec.Command(bins[name], args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}, env...)
	s := &started{cmd: cmd, stderr: &testbed.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	keepOutput(t.Name()+" "+name, s.stderr)
	runtime.LockOSThread() // Pdeathsig follows the thread that started the child
	err := cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop(10 * time.Second)
		if testing.Verbose() || t.Failed() {
			t.Logf("%s output:\n%s", name, s.stderr.String())
		}
	})
	return s
}

// stop sends SIGTERM and waits up to grace, then kills. It returns how
// long the process took to exit.
func (s *started) stop(grace time.Duration) time.Duration {
	begin := time.Now()
	select {
	case <-s.done:
		return 0
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	return time.Since(begin)
}

// dbCreds reads a JSON credential file written by vault-init and notes
// the password as a secret.
func dbCreds(t *testing.T, path string) (user, password string) {
	t.Helper()
	var c struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := json.Unmarshal([]byte(testbed.ReadFile(t, path)), &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if c.Username == "" || c.Password == "" {
		t.Fatalf("%s: no username or password", path)
	}
	noteSecret(c.Password)
	return c.Username, c.Password
}

// mode returns a file's permission bits.
func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// dirEntries lists a directory's names.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
