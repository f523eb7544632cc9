// Package render turns a secret's data into the bytes of its file: JSON,
// env or YAML, or a Go text/template compatible with consul-template's
// {{ with secret "PATH" }} idiom.
package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Formats a secret file can take.
const (
	JSON = "json"
	Env  = "env"
	YAML = "yaml"
)

// ValidFormat reports whether f names a format.
func ValidFormat(f string) bool { return f == JSON || f == Env || f == YAML }

// Format renders data (a secret's fields) in format f. Keys are sorted so
// the same data always gives the same bytes.
func Format(f string, data map[string]any) ([]byte, error) {
	switch f {
	case JSON:
		b, err := json.MarshalIndent(data, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	case Env:
		fieldOf := map[string]string{} // variable name -> the field it came from
		return lines(data, func(k string, v any) (string, error) {
			name := envKey(k)
			if refusedEnvName(name) {
				return "", fmt.Errorf("becomes variable %s, which changes what a shell or program that loads the file runs: the env format refuses it; rename the field in Vault, or use json, yaml or a --template", name)
			}
			if other, dup := fieldOf[name]; dup {
				return "", fmt.Errorf("field %q also becomes variable %s: the env format needs field names that differ after upper-casing; use json or a --template", other, name)
			}
			fieldOf[name] = k
			s, err := scalar(v)
			return name + "=" + envQuote(s), err
		})
	case YAML:
		return lines(data, func(k string, v any) (string, error) {
			b, err := json.Marshal(v) // JSON is valid YAML flow style, fully quoted
			return yamlKey(k) + ": " + yamlSafe(b), err
		})
	}
	return nil, fmt.Errorf("unknown format %q", f)
}

func lines(data map[string]any, line func(string, any) (string, error)) ([]byte, error) {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	for _, k := range keys {
		l, err := line(k, data[k])
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err)
		}
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// scalar is a value as env text: strings as they are, anything else as JSON.
func scalar(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

var notEnvChar = regexp.MustCompile(`[^A-Z0-9_]`)

// envKey upper-cases k and replaces what a shell variable name cannot hold.
func envKey(k string) string {
	k = notEnvChar.ReplaceAllString(strings.ToUpper(k), "_")
	if k == "" || (k[0] >= '0' && k[0] <= '9') {
		k = "_" + k
	}
	return k
}

// refusedEnvPrefixes and refusedEnvNames are variables that make a shell,
// the dynamic loader, an interpreter or runtime, or a common tool the app
// may start, run or load other code, or that change how a shell splits and
// parses what follows: a field of a secret must not set one when the file
// is sourced or loaded as an environment. README and docs/troubleshooting.md
// list them.
var (
	refusedEnvPrefixes = []string{
		"LD_", "DYLD_", "BASH_FUNC_", // loader, exported bash functions
		"CORECLR_PROFILER",                  // .NET profiler library and its id
		"LUA_INIT", "LUA_PATH", "LUA_CPATH", // with or without a _5_4 version suffix
	}
	refusedEnvNames = map[string]bool{
		// Shells.
		"PATH": true, "ENV": true, "BASH_ENV": true, "IFS": true, "SHELLOPTS": true, "BASHOPTS": true,
		"PS0": true, "PS1": true, "PS2": true, "PS3": true, "PS4": true, "PROMPT_COMMAND": true,
		"CDPATH": true, "GLOBIGNORE": true, "ZDOTDIR": true,
		// C library and OpenSSL, which load modules named by these.
		"GCONV_PATH": true, "HOSTALIASES": true, "LOCPATH": true, "NLSPATH": true,
		"OPENSSL_CONF": true, "OPENSSL_ENGINES": true, "OPENSSL_MODULES": true,
		// Python.
		"PYTHONPATH": true, "PYTHONHOME": true, "PYTHONSTARTUP": true, "PYTHONWARNINGS": true,
		"PYTHONBREAKPOINT": true, "PYTHONUSERBASE": true, "PYTHONPLATLIBDIR": true,
		// Perl, Ruby, Node.js, PHP, R.
		"PERL5LIB": true, "PERL5OPT": true, "PERLLIB": true, "PERL5DB": true,
		"RUBYOPT": true, "RUBYLIB": true,
		"NODE_OPTIONS": true, "NODE_PATH": true, "NODE_REPL_EXTERNAL_MODULE": true,
		"PHPRC": true, "PHP_INI_SCAN_DIR": true,
		"R_PROFILE": true, "R_PROFILE_USER": true,
		// Java: the JVM reads the first three; JAVA_OPTS is what most
		// images' start scripts pass to java.
		"JAVA_TOOL_OPTIONS": true, "_JAVA_OPTIONS": true, "JDK_JAVA_OPTIONS": true, "CLASSPATH": true, "JAVA_OPTS": true,
		// .NET.
		"DOTNET_STARTUP_HOOKS": true, "DOTNET_ADDITIONAL_DEPS": true, "CORECLR_ENABLE_PROFILING": true,
		// Commands that git, ssh, less and other tools run.
		"EDITOR": true, "VISUAL": true, "PAGER": true, "BROWSER": true, "LESSOPEN": true, "LESSCLOSE": true,
		"SSH_ASKPASS": true, "GIT_SSH": true, "GIT_SSH_COMMAND": true, "GIT_ASKPASS": true, "GIT_EDITOR": true,
		"GIT_PAGER": true, "GIT_EXTERNAL_DIFF": true, "GIT_PROXY_COMMAND": true, "GIT_EXEC_PATH": true,
		"GIT_TEMPLATE_DIR": true, "GIT_CONFIG_COUNT": true, "GIT_CONFIG_PARAMETERS": true,
		"GIT_CONFIG_GLOBAL": true, "GIT_CONFIG_SYSTEM": true,
	}
)

// refusedEnvName reports whether the env format refuses variable name.
func refusedEnvName(name string) bool {
	for _, p := range refusedEnvPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return refusedEnvNames[name]
}

// EnvEscapedFields returns, sorted, the fields of data whose env text holds
// a newline or another control character. envQuote writes those as escapes
// (\n, \r, \xNN): the dotenv readers turn \n and \r back into the
// character (python-dotenv, godotenv and Node's dotenv decode no \xNN), and
// a shell sourcing the file keeps the backslash and the letters, so such a
// value reaches no reader as it is in Vault.
func EnvEscapedFields(data map[string]any) []string {
	return envFields(data, func(s string) bool { return strings.ContainsFunc(s, isControl) })
}

// EnvDotenvFields returns, sorted, the fields of data without a control
// character that a dotenv reader may read differently from a shell, which
// reads every one of them as it is in Vault: a value envQuote has to write
// double-quoted with escapes (each reader undoes another set of them), and
// a value holding "${", which python-dotenv expands inside any quotes.
func EnvDotenvFields(data map[string]any) []string {
	return envFields(data, func(s string) bool {
		if strings.ContainsFunc(s, isControl) {
			return false
		}
		return strings.Contains(s, "${") || (needsEscape(s) && !singleQuotable(s))
	})
}

func envFields(data map[string]any, match func(string) bool) []string {
	var out []string
	for k, v := range data {
		s, err := scalar(v)
		if err == nil && match(s) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// needsEscape reports whether s holds a character that double quotes do
// not keep literal in sh.
func needsEscape(s string) bool { return strings.ContainsAny(s, "\"$`\\") }

// singleQuotable reports whether every reader of the env file takes s
// literally between single quotes. sh, godotenv and Node's dotenv take a
// single-quoted value as it is; python-dotenv reads \\ and \' in it as \
// and '. s must also not end in a backslash, which the dotenv readers take
// with the closing quote as an escaped quote, reading on into the next line.
func singleQuotable(s string) bool {
	return !strings.ContainsFunc(s, isControl) && !strings.Contains(s, "'") &&
		!strings.Contains(s, `\\`) && !strings.HasSuffix(s, `\`)
}

// envQuote quotes s so that no value can end the quote, expand, or start a
// new line, and so that a shell sourcing the file and the dotenv readers
// (python-dotenv, godotenv, Node's dotenv) agree on it wherever they can:
//   - a value with no ", \, $, ` or control character is double-quoted as
//     it is, which every reader takes literally;
//   - one with ", \, $ or ` is single-quoted when singleQuotable allows it,
//     since the readers unescape double-quoted text differently
//     (python-dotenv keeps \$ and \`, Node's dotenv keeps every backslash
//     and turns any \n into a newline, even in \\n);
//   - anything else is double-quoted with ", \, $ and ` escaped for sh, and
//     a newline, carriage return or other control character written as an
//     escape (\n, \r, \xNN) that sh keeps as it is. EnvEscapedFields and
//     EnvDotenvFields name these fields so that vault-init can warn.
//
// Invalid UTF-8 is written as U+FFFD in every form.
func envQuote(s string) string {
	var b strings.Builder
	if !strings.ContainsFunc(s, isControl) && (!needsEscape(s) || singleQuotable(s)) {
		q := byte('"')
		if needsEscape(s) {
			q = '\''
		}
		b.WriteByte(q)
		for _, r := range s {
			b.WriteRune(r)
		}
		b.WriteByte(q)
		return b.String()
	}
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\', '$', '`':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if isControl(r) {
				fmt.Fprintf(&b, `\x%02x`, r)
				continue
			}
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

var plainYAMLKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

var yamlReserved = map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true, "true": true, "false": true, "null": true}

func yamlKey(k string) string {
	if plainYAMLKey.MatchString(k) && !yamlReserved[strings.ToLower(k)] {
		return k
	}
	b, _ := json.Marshal(k)
	return yamlSafe(b)
}

// yamlSafe escapes what JSON leaves raw in a string but YAML rejects or
// folds: DEL, the C1 controls (U+0085 is a YAML line break), U+FEFF,
// U+FFFE and U+FFFF. The escapes are valid in both JSON and YAML.
func yamlSafe(b []byte) string {
	var sb strings.Builder
	for _, r := range string(b) {
		if r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0xfeff || r == 0xfffe || r == 0xffff {
			fmt.Fprintf(&sb, `\u%04x`, r)
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}
