package renew

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/cli"
)

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // in stderr; "" means the flags are valid
	}{
		{"fraction too big", []string{"--renew-fraction", "1.5"}, nil, "--renew-fraction 1.5"},
		{"fraction zero", []string{"--renew-fraction", "0"}, nil, "--renew-fraction 0"},
		{"jitter one", []string{"--jitter", "1"}, nil, "--jitter 1"},
		{"negative grace", []string{"--grace", "-1s"}, nil, "--grace -1s"},
		{"kv interval", []string{"--kv-interval", "10ms"}, nil, "--kv-interval 10ms"},
		{"signal without process", []string{"--notify-signal", "SIGHUP"}, nil, "needs --notify-process"},
		{"bad signal", []string{"--notify-process", "app", "--notify-signal", "SIGFOO"}, nil, `unknown signal "SIGFOO"`},
		{"process path", []string{"--notify-process", "/usr/bin/app"}, nil, "not a path"},
		{"bad url", []string{"--notify-url", "localhost:8080"}, nil, "--notify-url"},
		{"bad listen", []string{"--listen", "8099"}, nil, "--listen"},
		{"env is read", nil, map[string]string{"PODLEASE_RENEW_FRACTION": "2"}, "--renew-fraction 2"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			args := append([]string{"--state-dir", t.TempDir()}, tc.args...)
			code := Run(context.Background(), args, func(k string) string { return tc.env[k] }, &stderr, &stderr)
			if code != cli.ExitUsage || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), cli.ExitUsage, tc.want)
			}
		})
	}
}

func TestValidDefaults(t *testing.T) {
	t.Parallel()
	c := Config{StateDir: "/vault/state", SecretsDir: "/vault/secrets", Listen: ":8099", RenewFraction: 0.66, Jitter: 0.1, Grace: 30 * time.Second, KVInterval: 5 * time.Minute, RevokeTimeout: 10 * time.Second, NotifyProcess: "nginx"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.signal != syscall.SIGHUP {
		t.Errorf("default signal = %v; want SIGHUP", c.signal)
	}
	for in, want := range map[string]syscall.Signal{"SIGUSR1": syscall.SIGUSR1, "hup": syscall.SIGHUP, "TERM": syscall.SIGTERM, "10": syscall.Signal(10)} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestVersionAndMissingState(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"--version"}, func(string) string { return "" }, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "vault-renew ") {
		t.Errorf("--version: exit %d, %q", code, out.String())
	}
	errb.Reset()
	code := Run(context.Background(), []string{"--state-dir", t.TempDir(), "--listen", ""}, func(string) string { return "" }, &out, &errb)
	if code != cli.ExitFailure || !strings.Contains(errb.String(), "vault-init must run first") {
		t.Errorf("empty state dir: exit %d, %q", code, errb.String())
	}
}

func TestRotateBefore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag, ttl, want time.Duration
	}{
		{0, time.Hour, 20 * time.Minute},
		{0, 10 * time.Second, 5 * time.Second},
		{0, 6 * time.Second, 3 * time.Second}, // never more than half the TTL
		{time.Minute, time.Hour, time.Minute},
		{time.Hour, time.Hour, 30 * time.Minute},
	} {
		if got := rotateBefore(tc.flag, tc.ttl); got != tc.want {
			t.Errorf("rotateBefore(--rotate-before %s, ttl %s) = %s; want %s", tc.flag, tc.ttl, got, tc.want)
		}
	}
}

func TestRenewAtJitter(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for range 1000 {
		d := renewAt(now, now.Add(100*time.Second), 0.66, 0.1, rand.Float64()).Sub(now)
		if d < 59400*time.Millisecond || d > 66*time.Second {
			t.Fatalf("renewal %s after now for a 100s TTL; want between 59.4s and 66s", d)
		}
	}
}

func TestFindProcesses(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	procs := map[string][2]string{ // pid: comm, cmdline
		"10":   {"nginx\n", "nginx: master process\x00"},
		"11":   {"python3\n", "/usr/bin/my-long-app-name\x00--flag\x00"},
		"12":   {"my-long-app-na\n", "x\x00"},
		"13":   {"sh\n", "/bin/sh\x00"},
		"42":   {"nginx\n", "nginx\x00"}, // ourselves
		"self": {"nginx\n", ""},
	}
	for pid, p := range procs {
		d := filepath.Join(root, pid)
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, "comm"), []byte(p[0]), 0o644)
		os.WriteFile(filepath.Join(d, "cmdline"), []byte(p[1]), 0o644)
	}
	if got := findProcesses(root, "nginx", 42); !slices.Equal(got, []int{10}) {
		t.Errorf("nginx: %v; want [10]", got)
	}
	got := findProcesses(root, "my-long-app-name", 0)
	slices.Sort(got)
	if !slices.Equal(got, []int{11}) {
		t.Errorf("my-long-app-name: %v; want [11] (argv[0]); comm holds only 15 bytes", got)
	}
}

// TestSignalReachesTheApp signals a child process found through a fake
// /proc that lists only it.
func TestSignalReachesTheApp(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	root := t.TempDir()
	d := filepath.Join(root, strconv.Itoa(cmd.Process.Pid))
	os.Mkdir(d, 0o755)
	os.WriteFile(filepath.Join(d, "comm"), []byte("myapp\n"), 0o644)
	var logs syncBuffer
	n := newNotifier(&Config{NotifyProcess: "myapp", signal: syscall.SIGUSR1}, newTestLogger(&logs), nil, root)
	n.signal([]string{"db"})
	err := cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGUSR1 {
		t.Errorf("child ended with %v; want killed by SIGUSR1", err)
	}
	if !strings.Contains(logs.String(), "signalled the app") {
		t.Errorf("logs: %s", logs.String())
	}
}
