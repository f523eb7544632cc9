// Package cli holds what the three podlease commands share on the command
// line: flag sets whose every flag also reads a PODLEASE_* environment
// variable, the logger, and the mapping from errors to exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"

	"github.com/podlease/podlease/internal/version"
)

// Exit codes shared by every podlease command.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError marks an error caused by bad flags or configuration: the
// command prints it with a hint to --help and exits with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef builds a UsageError from a format string.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// IsUsage reports whether err is, or wraps, a UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// EnvName is the environment variable that stands in for a flag:
// "secrets-dir" reads PODLEASE_SECRETS_DIR.
func EnvName(flag string) string {
	return "PODLEASE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// noEnv is the annotation NoEnv sets on a flag.
const noEnv = "podlease/no-env"

// NoEnv marks flag name as one that asks a question instead of configuring
// the run (--version): Parse never fills it from the environment, so a stray
// PODLEASE_VERSION cannot turn an init container into a no-op that exits 0.
// Only flags registered on fs can be marked; it panics otherwise.
func NoEnv(fs *pflag.FlagSet, name string) {
	if err := fs.SetAnnotation(name, noEnv, []string{"true"}); err != nil {
		panic(err)
	}
}

// NewFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to w.
func NewFlagSet(name, summary string, w io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(w)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\nFlags (each, except --help and --version, also read from PODLEASE_<FLAG>, e.g. --state-dir from PODLEASE_STATE_DIR; flag > environment > default):\n", name, summary)
		fmt.Fprint(w, fs.FlagUsages())
	}
	return fs
}

// Parse parses args, then fills every flag not given on the command line
// from its PODLEASE_* variable, except flags marked with NoEnv (and --help,
// which is no flag of the set). Repeatable flags take several values from
// one variable, separated by newlines or commas. The returned error is a
// UsageError naming the flag or variable; pflag.ErrHelp is passed through.
func Parse(fs *pflag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return &UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q: %s takes flags only", fs.Arg(0), fs.Name())
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Annotations[noEnv] != nil {
			return
		}
		env := EnvName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		values := []string{v}
		if isRepeatable(f) {
			values = strings.FieldsFunc(v, func(r rune) bool { return r == '\n' || r == ',' })
		}
		for _, one := range values {
			if err := fs.Set(f.Name, strings.TrimSpace(one)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
				return
			}
		}
		_ = fs.SetAnnotation(f.Name, fromEnv, []string{env})
	})
	if err := errors.Join(errs...); err != nil {
		return &UsageError{Err: err}
	}
	return nil
}

// fromEnv is the flag annotation Parse leaves on a flag it set from the
// environment, holding the variable's name.
const fromEnv = "podlease.io/from-env"

// Source says where a parsed flag's value came from: "--name" (the
// command line), the PODLEASE_* variable's name, or "default".
func Source(f *pflag.Flag) string {
	if env := f.Annotations[fromEnv]; len(env) == 1 {
		return env[0]
	}
	if f.Changed {
		return "--" + f.Name
	}
	return "default"
}

func isRepeatable(f *pflag.Flag) bool {
	t := f.Value.Type()
	return strings.HasSuffix(t, "Array") || strings.HasSuffix(t, "Slice")
}

// RequireDirs checks the --state-dir and --secrets-dir that vault-renew
// and vault-revoke take: both must be given (vault-init checks more).
func RequireDirs(stateDir, secretsDir string) error {
	if stateDir == "" {
		return errors.New("--state-dir must not be empty")
	}
	if secretsDir == "" {
		return errors.New("--secrets-dir must not be empty")
	}
	return nil
}

// LogFlags are the logging flags every command takes.
type LogFlags struct {
	Format string
	Level  string
}

// Register adds --log-format and --log-level to fs.
func (l *LogFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn or error")
}

// Logger builds the slog logger the flags describe, writing to w.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	level, ok := levels[strings.ToLower(l.Level)]
	if !ok {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, Usagef("--log-format %q: want text or json", l.Format)
	}
}

// Command is one podlease binary, as Main runs it.
type Command struct {
	Name    string
	Summary string
	// Flags registers the command's own flags; Main adds --log-format,
	// --log-level and --version after them.
	Flags func(*pflag.FlagSet)
	// Validate checks the parsed configuration; its error is a usage
	// error (exit 2).
	Validate func(getenv func(string) string) error
	// Run does the work; its error is printed once, as the last log line.
	Run func(ctx context.Context, log *slog.Logger) error
}

// Main is every podlease binary's entry point: parse the flags and their
// PODLEASE_* variables, answer --version, validate, build the logger, run,
// and turn the outcome into the exit code.
func Main(ctx context.Context, cmd Command, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	// --help was asked for: its text is the output, so it goes to stdout.
	fs := NewFlagSet(cmd.Name, cmd.Summary, stdout)
	cmd.Flags(fs)
	var lf LogFlags
	lf.Register(fs)
	showVersion := fs.Bool("version", false, "print the version and exit (never read from the environment)")
	NoEnv(fs, "version")
	if err := Parse(fs, args, getenv); err != nil {
		return Report(stderr, cmd.Name, err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, cmd.Name, version.Version)
		return ExitOK
	}
	if err := cmd.Validate(getenv); err != nil {
		return Report(stderr, cmd.Name, &UsageError{Err: withSources(fs, err)})
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		return Report(stderr, cmd.Name, err)
	}
	if err := cmd.Run(ctx, log); err != nil {
		log.Error(cmd.Name+" failed", "err", err)
		return Report(io.Discard, cmd.Name, err)
	}
	return ExitOK
}

// withSources adds to a validation error that names a flag (--name)
// which variable set that flag, when one did and the error does not say
// so already: the operator who set PODLEASE_TIMEOUT=10 should not look
// for a --timeout on a command line that has none.
func withSources(fs *pflag.FlagSet, err error) error {
	msg := err.Error()
	var notes []string
	fs.VisitAll(func(f *pflag.Flag) {
		env := f.Annotations[fromEnv]
		if len(env) == 1 && namesFlag(msg, f.Name) && !strings.Contains(msg, env[0]) {
			notes = append(notes, fmt.Sprintf("--%s was set by %s", f.Name, env[0]))
		}
	})
	if len(notes) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(notes, "; "))
}

// namesFlag reports whether msg names --name itself, not a longer flag
// that begins with it.
func namesFlag(msg, name string) bool {
	flag := "--" + name
	for i := strings.Index(msg, flag); i >= 0; {
		end := i + len(flag)
		if end == len(msg) || !(msg[end] == '-' || msg[end] >= 'a' && msg[end] <= 'z') {
			return true
		}
		j := strings.Index(msg[end:], flag)
		if j < 0 {
			break
		}
		i = end + j
	}
	return false
}

// Report prints err once, the way every command ends, and returns the exit
// code that goes with it.
func Report(w io.Writer, name string, err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, pflag.ErrHelp):
		return ExitOK
	case IsUsage(err):
		fmt.Fprintf(w, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return ExitUsage
	default:
		fmt.Fprintf(w, "%s: %v\n", name, err)
		return ExitFailure
	}
}
