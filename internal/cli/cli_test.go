package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// flags is a small command line shaped like vault-init's.
type flags struct {
	addr    string
	timeout time.Duration
	verbose bool
	secrets []string
}

func newFlags(out *bytes.Buffer) (*pflag.FlagSet, *flags) {
	var f flags
	fs := NewFlagSet("vault-test", "A test command.", out)
	fs.StringVar(&f.addr, "vault-addr", "http://default:8200", "address")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "timeout")
	fs.BoolVar(&f.verbose, "verbose", false, "verbose")
	fs.StringArrayVar(&f.secrets, "secret", nil, "NAME=PATH (repeatable)")
	return fs, &f
}

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	for flag, want := range map[string]string{
		"secrets-dir": "PODLEASE_SECRETS_DIR",
		"timeout":     "PODLEASE_TIMEOUT",
		"jwt-file":    "PODLEASE_JWT_FILE",
	} {
		if got := EnvName(flag); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func TestParsePrecedence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want flags
	}{
		{
			name: "defaults",
			want: flags{addr: "http://default:8200", timeout: 2 * time.Minute},
		},
		{
			name: "env over default",
			env:  map[string]string{"PODLEASE_VAULT_ADDR": "http://env:8200", "PODLEASE_TIMEOUT": "5s", "PODLEASE_VERBOSE": "true"},
			want: flags{addr: "http://env:8200", timeout: 5 * time.Second, verbose: true},
		},
		{
			name: "flag over env",
			args: []string{"--vault-addr=http://flag:8200", "--timeout", "7s"},
			env:  map[string]string{"PODLEASE_VAULT_ADDR": "http://env:8200", "PODLEASE_TIMEOUT": "5s"},
			want: flags{addr: "http://flag:8200", timeout: 7 * time.Second},
		},
		{
			name: "flag over env per flag",
			args: []string{"--timeout=7s"},
			env:  map[string]string{"PODLEASE_VAULT_ADDR": "http://env:8200", "PODLEASE_TIMEOUT": "5s"},
			want: flags{addr: "http://env:8200", timeout: 7 * time.Second},
		},
		{
			name: "empty env is unset",
			env:  map[string]string{"PODLEASE_VAULT_ADDR": ""},
			want: flags{addr: "http://default:8200", timeout: 2 * time.Minute},
		},
		{
			name: "other prefixes ignored",
			env:  map[string]string{"VAULT_ADDR": "http://vault:8200", "podlease_vault_addr": "http://lower:8200"},
			want: flags{addr: "http://default:8200", timeout: 2 * time.Minute},
		},
		{
			name: "repeatable flag from env, comma separated",
			env:  map[string]string{"PODLEASE_SECRET": "db=database/creds/app,kv=secret/data/app"},
			want: flags{addr: "http://default:8200", timeout: 2 * time.Minute, secrets: []string{"db=database/creds/app", "kv=secret/data/app"}},
		},
		{
			name: "repeatable flag from env, newline separated with blanks and spaces",
			env:  map[string]string{"PODLEASE_SECRET": "\n  db=database/creds/app\n\nkv=secret/data/app  \n"},
			want: flags{addr: "http://default:8200", timeout: 2 * time.Minute, secrets: []string{"db=database/creds/app", "kv=secret/data/app"}},
		},
		{
			name: "repeatable flag: the command line replaces the env list",
			args: []string{"--secret", "a=x/y", "--secret", "b=x/z"},
			env:  map[string]string{"PODLEASE_SECRET": "db=database/creds/app"},
			want: flags{addr: "http://default:8200", timeout: 2 * time.Minute, secrets: []string{"a=x/y", "b=x/z"}},
		},
		{
			name: "non-repeatable flag keeps commas",
			env:  map[string]string{"PODLEASE_VAULT_ADDR": "http://a:8200,http://b:8200"},
			want: flags{addr: "http://a:8200,http://b:8200", timeout: 2 * time.Minute},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			fs, got := newFlags(&out)
			if err := Parse(fs, tc.args, env(tc.env)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantOut  []string // in what Report prints
	}{
		{name: "unknown flag", args: []string{"--bogus"}, wantCode: ExitUsage, wantOut: []string{"unknown flag: --bogus", "Run 'vault-test --help' for usage."}},
		{name: "unknown shorthand", args: []string{"-x"}, wantCode: ExitUsage, wantOut: []string{"unknown shorthand flag: 'x'"}},
		{name: "missing value", args: []string{"--vault-addr"}, wantCode: ExitUsage, wantOut: []string{"--vault-addr"}},
		{name: "bad duration", args: []string{"--timeout=soon"}, wantCode: ExitUsage, wantOut: []string{`"soon"`, "--timeout"}},
		{name: "stray argument", args: []string{"--timeout=1s", "extra"}, wantCode: ExitUsage, wantOut: []string{`unexpected argument "extra"`, "flags only"}},
		{name: "argument after --", args: []string{"--", "--timeout=1s"}, wantCode: ExitUsage, wantOut: []string{`unexpected argument "--timeout=1s"`}},
		{name: "bad env value names the variable", env: map[string]string{"PODLEASE_TIMEOUT": "soon"}, wantCode: ExitUsage, wantOut: []string{"PODLEASE_TIMEOUT", `"soon"`}},
		{name: "bad env bool", env: map[string]string{"PODLEASE_VERBOSE": "maybe"}, wantCode: ExitUsage, wantOut: []string{"PODLEASE_VERBOSE"}},
		{name: "help", args: []string{"--help"}, wantCode: ExitOK},
		{name: "help short", args: []string{"-h"}, wantCode: ExitOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var usage, report bytes.Buffer
			fs, _ := newFlags(&usage)
			err := Parse(fs, tc.args, env(tc.env))
			if err == nil {
				t.Fatal("no error")
			}
			if got := Report(&report, "vault-test", err); got != tc.wantCode {
				t.Errorf("exit code %d, want %d (err %v)", got, tc.wantCode, err)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(report.String(), want) {
					t.Errorf("report %q does not contain %q", report.String(), want)
				}
			}
		})
	}
}

func TestHelpNamesEnvVariables(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	fs, _ := newFlags(&out)
	if err := Parse(fs, []string{"--help"}, env(nil)); !errors.Is(err, pflag.ErrHelp) {
		t.Fatalf("err = %v, want pflag.ErrHelp", err)
	}
	for _, want := range []string{"Usage: vault-test [flags]", "A test command.", "PODLEASE_", "--vault-addr", "--secret"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help does not contain %q:\n%s", want, out.String())
		}
	}
}

func TestReport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		err      error
		wantCode int
		wantOut  string
	}{
		{"ok", nil, ExitOK, ""},
		{"help", pflag.ErrHelp, ExitOK, ""},
		{"usage", Usagef("--role is required"), ExitUsage, "cmd: --role is required\nRun 'cmd --help' for usage.\n"},
		{"wrapped usage", fmt.Errorf("context: %w", Usagef("bad")), ExitUsage, "cmd: context: bad\nRun 'cmd --help' for usage.\n"},
		{"runtime", errors.New("vault unreachable"), ExitFailure, "cmd: vault unreachable\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			if got := Report(&out, "cmd", tc.err); got != tc.wantCode {
				t.Errorf("exit code %d, want %d", got, tc.wantCode)
			}
			if out.String() != tc.wantOut {
				t.Errorf("printed %q, want %q", out.String(), tc.wantOut)
			}
		})
	}
}

func TestLogger(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		flags         LogFlags
		wantErr       string // names the flag
		logsDebug     bool
		wantPrefix    string
		wantInfoShown bool
	}{
		{name: "text info", flags: LogFlags{"text", "info"}, wantPrefix: "time=", wantInfoShown: true},
		{name: "json debug", flags: LogFlags{"json", "debug"}, wantPrefix: "{", logsDebug: true, wantInfoShown: true},
		{name: "upper-case level", flags: LogFlags{"text", "WARN"}, wantPrefix: "time="},
		{name: "error level", flags: LogFlags{"json", "error"}},
		{name: "bad level", flags: LogFlags{"text", "verbose"}, wantErr: "--log-level"},
		{name: "empty level", flags: LogFlags{"text", ""}, wantErr: "--log-level"},
		{name: "bad format", flags: LogFlags{"logfmt", "info"}, wantErr: "--log-format"},
		{name: "format is case-sensitive", flags: LogFlags{"JSON", "info"}, wantErr: "--log-format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			log, err := tc.flags.Logger(&out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsUsage(err) {
					t.Fatalf("err = %v, want a usage error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("debug line")
			log.Info("info line")
			log.Warn("warn line", "err", "boom")
			got := out.String()
			if strings.Contains(got, "debug line") != tc.logsDebug {
				t.Errorf("debug shown = %v, want %v:\n%s", !tc.logsDebug, tc.logsDebug, got)
			}
			if strings.Contains(got, "info line") != tc.wantInfoShown {
				t.Errorf("info shown = %v, want %v:\n%s", !tc.wantInfoShown, tc.wantInfoShown, got)
			}
			if tc.wantPrefix != "" && !strings.HasPrefix(got, tc.wantPrefix) {
				t.Errorf("output %q does not start with %q", got, tc.wantPrefix)
			}
		})
	}
}

func TestRequireDirs(t *testing.T) {
	t.Parallel()
	if err := RequireDirs("/vault/state", "/vault/secrets"); err != nil {
		t.Errorf("both given: %v", err)
	}
	if err := RequireDirs("", "/vault/secrets"); err == nil || err.Error() != "--state-dir must not be empty" {
		t.Errorf("no state dir: %v", err)
	}
	if err := RequireDirs("/vault/state", ""); err == nil || err.Error() != "--secrets-dir must not be empty" {
		t.Errorf("no secrets dir: %v", err)
	}
}

func TestLogFlagsRegister(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	fs := NewFlagSet("cmd", "", &out)
	var l LogFlags
	l.Register(fs)
	if err := Parse(fs, []string{"--log-format=json"}, env(map[string]string{"PODLEASE_LOG_LEVEL": "debug"})); err != nil {
		t.Fatal(err)
	}
	if l != (LogFlags{Format: "json", Level: "debug"}) {
		t.Errorf("got %+v", l)
	}
	if _, err := l.Logger(&out); err != nil {
		t.Fatal(err)
	}
}

// TestMainVersionAndHelpNotFromEnv checks that PODLEASE_VERSION and
// PODLEASE_HELP do not stand in for --version and --help: an init container
// with a stray variable must still do its work, not print and exit 0.
func TestMainVersionAndHelpNotFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantRun bool
		wantOut string // on stdout
	}{
		{name: "PODLEASE_VERSION", env: map[string]string{"PODLEASE_VERSION": "1"}, wantRun: true},
		{name: "PODLEASE_VERSION=true", env: map[string]string{"PODLEASE_VERSION": "true"}, wantRun: true},
		{name: "PODLEASE_HELP", env: map[string]string{"PODLEASE_HELP": "true"}, wantRun: true},
		{name: "--version", args: []string{"--version"}, wantOut: "vault-test "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			ran := false
			cmd := Command{
				Name:     "vault-test",
				Summary:  "A test command.",
				Flags:    func(*pflag.FlagSet) {},
				Validate: func(func(string) string) error { return nil },
				Run:      func(context.Context, *slog.Logger) error { ran = true; return nil },
			}
			if code := Main(context.Background(), cmd, tc.args, env(tc.env), &stdout, &stderr); code != ExitOK {
				t.Fatalf("exit code %d, stderr %q", code, stderr.String())
			}
			if ran != tc.wantRun {
				t.Errorf("ran = %v, want %v (stdout %q)", ran, tc.wantRun, stdout.String())
			}
			if !strings.HasPrefix(stdout.String(), tc.wantOut) || (tc.wantOut == "" && stdout.Len() > 0) {
				t.Errorf("stdout %q, want it to start with %q", stdout.String(), tc.wantOut)
			}
		})
	}
}

func TestNoEnvFlagIgnoresEnvironment(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	fs, got := newFlags(&out)
	NoEnv(fs, "verbose")
	if err := Parse(fs, nil, env(map[string]string{"PODLEASE_VERBOSE": "true", "PODLEASE_TIMEOUT": "5s"})); err != nil {
		t.Fatal(err)
	}
	if got.verbose || got.timeout != 5*time.Second {
		t.Errorf("verbose %v timeout %v: want false (not from env), 5s (from env)", got.verbose, got.timeout)
	}
	if err := Parse(fs, []string{"--verbose"}, env(nil)); err != nil || !got.verbose {
		t.Errorf("--verbose on the command line: err %v, verbose %v", err, got.verbose)
	}
}

func TestMainHelpGoesToStdout(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h"} {
		var stdout, stderr bytes.Buffer
		cmd := Command{
			Name:     "vault-test",
			Summary:  "A test command.",
			Flags:    func(*pflag.FlagSet) {},
			Validate: func(func(string) string) error { t.Error("validated after --help"); return nil },
			Run:      func(context.Context, *slog.Logger) error { t.Error("ran after --help"); return nil },
		}
		if code := Main(context.Background(), cmd, []string{arg}, env(nil), &stdout, &stderr); code != ExitOK {
			t.Errorf("%s: exit code %d, want 0", arg, code)
		}
		if !strings.Contains(stdout.String(), "Usage: vault-test") || stderr.Len() > 0 {
			t.Errorf("%s: stdout %q, stderr %q: want the usage on stdout and nothing on stderr", arg, stdout.String(), stderr.String())
		}
	}
}

// TestSource: Source tells a flag given on the command line from one
// filled from its PODLEASE_* variable and from one left at its default.
func TestSource(t *testing.T) {
	t.Parallel()
	fs := NewFlagSet("x", "", io.Discard)
	fs.String("role", "", "")
	fs.String("state-dir", "/s", "")
	fs.String("timeout", "1m", "")
	env := map[string]string{"PODLEASE_STATE_DIR": "/e", "PODLEASE_ROLE": "ignored"}
	if err := Parse(fs, []string{"--role=app"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"role": "--role", "state-dir": "PODLEASE_STATE_DIR", "timeout": "default"} {
		if got := Source(fs.Lookup(flag)); got != want {
			t.Errorf("Source(%s) = %q, want %q", flag, got, want)
		}
	}
}

// TestValidationNamesTheVariable: a validation error about a flag that
// took its value from the environment says which variable set it.
func TestValidationNamesTheVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the whole first line of stderr
	}{
		{"from the environment", nil, map[string]string{"PODLEASE_TIMEOUT": "-1s"},
			"vault-test: --timeout -1s: want a positive duration (--timeout was set by PODLEASE_TIMEOUT)"},
		{"from the command line", []string{"--timeout", "-1s"}, map[string]string{"PODLEASE_TIMEOUT": "5s"},
			"vault-test: --timeout -1s: want a positive duration"},
		{"a longer flag from the environment", []string{"--timeout", "-1s"}, map[string]string{"PODLEASE_TIMEOUT_GRACE": "1s"},
			"vault-test: --timeout -1s: want a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var timeout, grace time.Duration
			cmd := Command{
				Name:    "vault-test",
				Summary: "A test command.",
				Flags: func(fs *pflag.FlagSet) {
					fs.DurationVar(&timeout, "timeout", time.Second, "")
					fs.DurationVar(&grace, "timeout-grace", time.Second, "")
				},
				Validate: func(func(string) string) error {
					if timeout <= 0 {
						return fmt.Errorf("--timeout %s: want a positive duration", timeout)
					}
					return nil
				},
				Run: func(context.Context, *slog.Logger) error { return nil },
			}
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), cmd, tc.args, env(tc.env), &stdout, &stderr)
			if first, _, _ := strings.Cut(stderr.String(), "\n"); code != ExitUsage || first != tc.want {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, first, ExitUsage, tc.want)
			}
		})
	}
}
