package renew

import (
	"bytes"
	"context"
	"math"
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
		{"empty state dir", []string{"--state-dir", ""}, nil, "--state-dir must not be empty"},
		{"empty secrets dir", []string{"--secrets-dir", ""}, nil, "--secrets-dir must not be empty"},
		{"memory limit without a unit the runtime knows", []string{"--memory-limit", "16M"}, nil, `--memory-limit "16M": want a size such as 16MiB`},
		{"memory limit too small", []string{"--memory-limit", "1MiB"}, nil, `--memory-limit "1MiB": want at least 4MiB`},
		{"memory limit from the environment", nil, map[string]string{"PODLEASE_MEMORY_LIMIT": "lots"}, `--memory-limit "lots"`},
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

func TestParseMemoryLimit(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"off": math.MaxInt64, "6MiB": 6 << 20, "4MiB": 4 << 20, "16384KiB": 16 << 20, "1GiB": 1 << 30,
		"2TiB": 2 << 40, "8388608": 8 << 20, "8388608B": 8 << 20,
	} {
		if got, err := parseMemoryLimit(in); err != nil || got != want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "6M", "6mib", "6 MiB", "1.5GiB", "-6MiB", "+6MiB", "3MiB", "4194303", "OFF", "9999999999TiB", "0x600000"} {
		if got, err := parseMemoryLimit(in); err == nil {
			t.Errorf("parseMemoryLimit(%q) = %d; want an error", in, got)
		}
	}
}

// TestListenOff: off turns the HTTP server off, from the command line or
// the environment (where an empty value counts as unset).
func TestListenOff(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"off", ""} {
		c := Config{StateDir: "/vault/state", SecretsDir: "/vault/secrets", Listen: listen, RenewFraction: 0.66, Grace: 30 * time.Second, KVInterval: 5 * time.Minute, RevokeTimeout: 10 * time.Second}
		if err := c.Validate(); err != nil {
			t.Fatalf("--listen %q: %v", listen, err)
		}
		if c.Listen != "" {
			t.Errorf("--listen %q: the server would listen on %q", listen, c.Listen)
		}
	}
}
