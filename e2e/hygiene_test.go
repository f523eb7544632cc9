package e2e

// Secret hygiene beyond the output scan of TestMain: process arguments and
// environments, notifications to the app, and the state file.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
	"github.com/podlease/podlease/internal/state"
)

// procText returns /proc/PID/NAME with NULs as spaces.
func procText(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), name))
	if err != nil {
		t.Fatalf("read /proc/%d/%s: %v", pid, name, err)
	}
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// TestHygieneProcesses watches a pod's whole life from outside: no secret
// in vault-init's or vault-renew's arguments or environment, none in what
// vault-renew sends the app when it replaces a credential (the HTTP
// notification, the signalled process's environment), none in
// state.json, and none in any log line at debug level.
func TestHygieneProcesses(t *testing.T) {
	t.Parallel()
	const role = "hygiene"
	if err := bed.CreateDBRole(role, 4*time.Second, 8*time.Second); err != nil {
		t.Fatal(err)
	}
	prefix := "database/creds/" + role + "/"
	t.Cleanup(func() { revokePrefix(t, prefix) })
	p := newPod(t)

	// vault-init, slowed down by 1s a request so that it can be watched
	// while it runs.
	fp := newFaultProxy(t)
	if err := fp.Set(testbed.Rule{Fault: testbed.Slow, Delay: time.Second}); err != nil {
		t.Fatal(err)
	}
	initArgs := p.initArgs("--secret", "db=database/creds/"+role, "--secret", "kv=secret/data/app", "--vault-addr", fp.URL(), "--log-level", "debug")
	s := start(t, "vault-init", initArgs, p.env...)
	time.Sleep(500 * time.Millisecond)
	initCmdline, initEnv := procText(t, s.cmd.Process.Pid, "cmdline"), procText(t, s.cmd.Process.Pid, "environ")
	if code := s.exitCode(); code != 0 {
		t.Fatalf("vault-init exit %d:\n%s", code, s.stderr.String())
	}
	noteSecret(p.token(), bed.KVAPIKey)
	dbCreds(t, filepath.Join(p.secretsDir, "db"))
	if err := fp.Clear(); err != nil {
		t.Fatal(err)
	}

	// The app: a process with a name of its own that records the signals
	// it gets, and an HTTP endpoint for notifications.
	appDir := t.TempDir()
	appName := "plapp" + strconv.Itoa(os.Getpid()%100000)
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	appBin := filepath.Join(appDir, appName)
	if err := os.WriteFile(appBin, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	hups := filepath.Join(appDir, "hups")
	appCmd := startApp(t, appBin, `trap 'echo hup >> `+hups+`' HUP; while :; do sleep 0.1; done`)

	var mu sync.Mutex
	var posts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		var h strings.Builder
		_ = r.Header.Write(&h)
		posts = append(posts, r.Method+" "+r.URL.String()+"\n"+h.String()+"\n"+string(b))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)

	before := testbed.ReadFile(t, filepath.Join(p.secretsDir, "db"))
	renew := start(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--log-level", "debug",
		"--notify-process", appName, "--notify-signal", "SIGHUP", "--notify-url", srv.URL + "/-/reload"}, p.env...)
	time.Sleep(300 * time.Millisecond)
	renewCmdline, renewEnv := procText(t, renew.cmd.Process.Pid, "cmdline"), procText(t, renew.cmd.Process.Pid, "environ")

	// Wait for a rotation (the 8s max TTL forces one) and its notices.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(posts)
		mu.Unlock()
		_, err := os.Stat(hups)
		if n > 0 && err == nil && testbed.ReadFile(t, filepath.Join(p.secretsDir, "db")) != before {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := testbed.ReadFile(t, filepath.Join(p.secretsDir, "db"))
	if after == before {
		t.Fatalf("no rotation within 15s:\n%s", renew.stderr.String())
	}
	dbCreds(t, filepath.Join(p.secretsDir, "db"))
	appEnv := procText(t, appCmd.Process.Pid, "environ")
	renew.stop(10 * time.Second)
	r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--log-level", "debug"}, p.env...)
	if r.code != 0 {
		t.Fatalf("vault-revoke: %s", r.stderr)
	}

	mu.Lock()
	notices := strings.Join(posts, "\n---\n")
	mu.Unlock()
	if len(posts) == 0 {
		t.Error("the app got no HTTP notification")
	}
	for _, body := range posts {
		var v map[string]string
		parts := strings.SplitN(body, "\n\n", 2)
		if len(parts) != 2 || json.Unmarshal([]byte(strings.TrimSpace(parts[1])), &v) != nil || len(v) != 1 || v["secret"] == "" {
			t.Errorf("notification is not {\"secret\": NAME}: %q", body)
		}
	}
	if _, err := os.Stat(hups); err != nil {
		t.Error("the app process got no SIGHUP")
	}
	checked := map[string]string{
		"vault-init command line": initCmdline, "vault-init environment": initEnv,
		"vault-renew command line": renewCmdline, "vault-renew environment": renewEnv,
		"HTTP notifications to the app": notices, "environment of the signalled app": appEnv,
		"state.json":           testbed.ReadFile(t, filepath.Join(p.stateDir, state.FileName)),
		"vault-init debug log": s.stderr.String(), "vault-renew debug log": renew.stderr.String(), "vault-revoke debug log": r.stderr,
	}
	leaks := 0
	for what, text := range checked {
		assertNoSecret(t, what, text)
		leaks += leaksIn(text)
	}
	figure(t, "hygiene", "%d places checked for every secret the bed issued (%d so far) besides the global output scan: process arguments and environments of vault-init and vault-renew, %d HTTP notifications, the signalled app's environment, state.json, debug logs of all three binaries: %d leaks",
		len(checked), numSecrets(), len(posts), leaks)
}

// startApp runs a stand-in for the app: sh, under the name of bin, with
// script; it is killed when the test ends.
func startApp(t *testing.T, bin, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-c", script)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "APP_SETTING=plain"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}
