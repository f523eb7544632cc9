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

// refusedEnvPrefixes and refusedEnvNames are variables that make a shell
// or the dynamic loader, or an interpreter, run or load other code, or
// change how a shell splits and parses what follows: a field of a secret
// must not set one when the file is sourced or loaded as an environment.
var (
	refusedEnvPrefixes = []string{"LD_", "DYLD_", "BASH_FUNC_"}
	refusedEnvNames    = map[string]bool{
		"PATH": true, "ENV": true, "BASH_ENV": true, "IFS": true, "SHELLOPTS": true, "BASHOPTS": true,
		"PS1": true, "PS2": true, "PS3": true, "PS4": true, "PROMPT_COMMAND": true, "CDPATH": true, "GLOBIGNORE": true,
		"GCONV_PATH": true, "HOSTALIASES": true, "LOCPATH": true, "NLSPATH": true,
		"PYTHONPATH": true, "PYTHONHOME": true, "PYTHONSTARTUP": true, "PERL5LIB": true, "PERL5OPT": true, "PERLLIB": true,
		"RUBYOPT": true, "RUBYLIB": true, "NODE_OPTIONS": true, "NODE_PATH": true, "JAVA_TOOL_OPTIONS": true, "_JAVA_OPTIONS": true,
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
// (\n, \r, \xNN): a dotenv reader turns them back into the character, but
// a shell sourcing the file keeps the backslash and the letters, so such a
// value does not reach a shell as it is in Vault.
func EnvEscapedFields(data map[string]any) []string {
	var out []string
	for k, v := range data {
		s, err := scalar(v)
		if err == nil && strings.ContainsFunc(s, isControl) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// envQuote double-quotes s so that no value can end the quote, expand, or
// start a new line. A shell sourcing the file and a dotenv reader see the
// same value as long as it has no control character. A newline, carriage
// return or other control character is written as an escape (\n, \r,
// \xNN): dotenv readers decode it, a shell does not (it sees the two
// characters \ and n), so multi-line values belong in json or a template.
func envQuote(s string) string {
	var b strings.Builder
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
