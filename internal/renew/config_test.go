package renew

import (
	"bytes"
	"context"
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
