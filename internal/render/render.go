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

// envQuote double-quotes s the way shells and dotenv readers agree on,
// escaping what could end the quote, expand, or start a new line.
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
			if r < 0x20 || r == 0x7f {
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
