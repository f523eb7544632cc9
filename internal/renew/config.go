package renew

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/podlease/podlease/internal/cli"
)

// Config is vault-renew's parsed command line. Everything about Vault
// (address, login, secrets) comes from state.json instead, but for the
// secrets dir, which bounds the files it writes.
type Config struct {
	StateDir       string
	SecretsDir     string
	Listen         string
	RenewFraction  float64
	Jitter         float64
	RotateBefore   time.Duration
	Grace          time.Duration
	KVInterval     time.Duration
	VerifyInterval time.Duration
	NotifySignal   string
	NotifyProcess  string
	NotifyURL      string
	ExitOnFailure  bool
	RevokeOnExit   bool
	RevokeTimeout  time.Duration
	MemoryLimit    string

	signal      syscall.Signal // parsed NotifySignal
	memoryLimit int64          // parsed MemoryLimit in bytes; 0: not given
}

func (c *Config) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.StateDir, "state-dir", "/vault/state", "directory holding the token and state.json written by vault-init")
	fs.StringVar(&c.SecretsDir, "secrets-dir", "/vault/secrets", "directory holding the secret files, as given to vault-init; vault-renew writes only NAME in it, and refuses a state.json that names another")
	fs.StringVar(&c.Listen, "listen", ":8099", "address for /healthz, /readyz and /metrics; empty or off disables the HTTP server (in PODLEASE_LISTEN only off: an empty variable counts as unset)")
	fs.Float64Var(&c.RenewFraction, "renew-fraction", defaultRenewFraction, "renew a lease or the token when this fraction of its remaining TTL has passed")
	fs.Float64Var(&c.Jitter, "jitter", defaultJitter, "renew up to this fraction earlier than --renew-fraction says, at random, so pods do not renew in lockstep (the defaults renew between 0.7185 and 0.728 of the TTL)")
	fs.DurationVar(&c.RotateBefore, "rotate-before", 0, "replace a credential (or log in again) this long before its hard expiry; 0 means max(TTL/3, 5s), never more than half the TTL")
	fs.DurationVar(&c.Grace, "grace", 30*time.Second, "keep a replaced credential this long (at most until it expires) so connection pools can drain, then revoke it")
	fs.DurationVar(&c.KVInterval, "kv-interval", 5*time.Minute, "re-read secrets without a lease (KV, static credentials) this often; the file changes only if the secret did")
	fs.DurationVar(&c.VerifyInterval, "verify-interval", 0, "between renewals, check this often that the token and every lease still exist in Vault (1 + one per leased secret requests each time; needs update on sys/leases/lookup), so that a lease or token revoked by hand is replaced, and /readyz turns 503, within this long; 0 disables")
	fs.StringVar(&c.NotifySignal, "notify-signal", "", "signal sent to --notify-process after a file changed (default SIGHUP)")
	fs.StringVar(&c.NotifyProcess, "notify-process", "", "name (as in /proc/PID/comm or argv[0]) of the app process to signal; needs shareProcessNamespace: true")
	fs.StringVar(&c.NotifyURL, "notify-url", "", `URL to POST {"secret": NAME} to after a file changed, e.g. http://127.0.0.1:8080/-/reload`)
	fs.BoolVar(&c.ExitOnFailure, "exit-on-failure", false, "exit with status 1 when a credential is lost (expired while Vault kept failing) instead of retrying")
	fs.BoolVar(&c.RevokeOnExit, "revoke-on-exit", false, "on SIGTERM, revoke every lease and the token and remove the files, as vault-revoke does; on a native sidecar the kubelet sends SIGTERM only after the app has exited, so this is where a pod's credentials should end")
	fs.DurationVar(&c.RevokeTimeout, "revoke-timeout", 10*time.Second, "bound on --revoke-on-exit; keep it well under the pod's terminationGracePeriodSeconds")
	fs.StringVar(&c.MemoryLimit, "memory-limit", "", "soft limit on the Go runtime's memory, written as GOMEMLIMIT is (16MiB, 1GiB, or off for none); by default 8MiB when neither GOMEMLIMIT nor GOMAXPROCS is set; raise it if vault-renew holds many large secrets")
}

// Validate checks the configuration; every error names the flag to fix.
func (c *Config) Validate() error {
	if err := cli.RequireDirs(c.StateDir, c.SecretsDir); err != nil {
		return err
	}
	if c.Listen == "off" {
		c.Listen = ""
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("--listen %q: want HOST:PORT or :PORT, e.g. :8099", c.Listen)
		}
	}
	if !(c.RenewFraction > 0 && c.RenewFraction < 1) {
		return fmt.Errorf("--renew-fraction %v: want a number between 0 and 1, e.g. 0.728", c.RenewFraction)
	}
	if !(c.Jitter >= 0 && c.Jitter < 1) {
		return fmt.Errorf("--jitter %v: want a number from 0 up to (not including) 1, e.g. 0.013", c.Jitter)
	}
	if c.RotateBefore < 0 {
		return fmt.Errorf("--rotate-before %s: want 0 (automatic) or a positive duration", c.RotateBefore)
	}
	if c.Grace < 0 {
		return fmt.Errorf("--grace %s: want 0 or a positive duration", c.Grace)
	}
	if c.RevokeTimeout <= 0 {
		return fmt.Errorf("--revoke-timeout %s: want a positive duration such as 10s", c.RevokeTimeout)
	}
	if c.VerifyInterval != 0 && c.VerifyInterval < time.Second {
		return fmt.Errorf("--verify-interval %s: want 0 (off) or at least 1s", c.VerifyInterval)
	}
	if c.KVInterval < time.Second {
		return fmt.Errorf("--kv-interval %s: want at least 1s", c.KVInterval)
	}
	if c.MemoryLimit != "" {
		n, err := parseMemoryLimit(c.MemoryLimit)
		if err != nil {
			return fmt.Errorf("--memory-limit %q: %w", c.MemoryLimit, err)
		}
		c.memoryLimit = n
	}
	if c.NotifySignal != "" && c.NotifyProcess == "" {
		return fmt.Errorf("--notify-signal %s needs --notify-process NAME: the process to send it to", c.NotifySignal)
	}
	if c.NotifyProcess != "" {
		if c.NotifySignal == "" {
			c.NotifySignal = "SIGHUP"
		}
		sig, err := parseSignal(c.NotifySignal)
		if err != nil {
			return fmt.Errorf("--notify-signal: %w", err)
		}
		c.signal = sig
		if strings.Contains(c.NotifyProcess, "/") {
			return fmt.Errorf("--notify-process %q: want a process name such as nginx, not a path", c.NotifyProcess)
		}
	}
	if c.NotifyURL != "" {
		u, err := url.Parse(c.NotifyURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--notify-url %q: want an http:// or https:// URL, e.g. http://127.0.0.1:8080/-/reload", c.NotifyURL)
		}
	}
	return nil
}

// signals are the signals an app may reasonably want on a rotation.
var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM,
	"WINCH": syscall.SIGWINCH, "ALRM": syscall.SIGALRM, "CONT": syscall.SIGCONT,
}

// parseSignal accepts SIGHUP, HUP, hup or a number.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 31 {
			return 0, fmt.Errorf("signal %d: want 1 to 31", n)
		}
		return syscall.Signal(n), nil
	}
	if sig, ok := signals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q: want one of SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGQUIT, SIGWINCH, SIGALRM, SIGCONT or a number", s)
}

// minMemoryLimit is the least --memory-limit: the Go runtime counts its
// own structures (about 5 MiB for vault-renew) against the limit, and
// with much less room than that left for the heap the collector runs
// without pause.
const minMemoryLimit = 4 << 20

// parseMemoryLimit reads a memory limit as the Go runtime reads
// GOMEMLIMIT: a whole number of bytes with an optional unit B, KiB, MiB,
// GiB or TiB, or "off" for none (the largest int64).
func parseMemoryLimit(s string) (int64, error) {
	if s == "off" {
		return math.MaxInt64, nil
	}
	digits := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[s[len(digits):]]
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || unit == 0 || strings.ContainsAny(digits, "+-") {
		return 0, errors.New("want a size such as 16MiB (units B, KiB, MiB, GiB, TiB) or off")
	}
	if n > math.MaxInt64/unit {
		return 0, errors.New("too large: want off for no limit")
	}
	if n*unit < minMemoryLimit {
		return 0, errors.New("want at least 4MiB: the Go runtime counts its own structures, about 5 MiB, against the limit, and with less the collector would run without pause")
	}
	return n * unit, nil
}
