package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// typical is what a database/creds read returns, with the json.Number
// values Vault's client decodes numbers into.
func typical() map[string]any {
	return map[string]any{
		"username":       "v-kubernetes-web-x7Yq2",
		"password":       "A1a-9ZmQ2pLrT0k",
		"connection_url": "postgresql://db.prod.svc:5432/app?sslmode=require",
		"max_ttl":        json.Number("86400"),
		"rotating":       true,
	}
}

// hostileValues are values a compromised or careless secret store could
// hold; none of them may change the structure of a rendered file.
var hostileValues = []any{
	`it's "quoted"`,
	"line1\nINJECTED=1",
	"line1\r\nINJECTED=2",
	"lone\rcarriage",
	"a=b=c",
	"$HOME ${PATH} $(touch pwned) $((1+1))",
	"`touch pwned`",
	`; rm -rf / # && echo "x" | cat > /tmp/x`,
	`back\slash\`,
	`DOMAIN\user`,
	`x\\y`,
	`p"a\s$w` + "`d",
	`it's $HOME and ${HOME}`,
	`\"`,
	`\n not a newline`,
	"tab\there",
	"nul\x00byte",
	"bell\a esc\x1b[31m del\x7f",
	"ünïcødé ✓ 日本語 🔑",
	"nel\u0085 ls\u2028 ps\u2029 bom\ufeff c1\u0086",
	"",
	"  leading and trailing spaces  ",
	"- not a list", ": colon", "# comment", "&anchor", "*alias", "!tag", "%directive", "|", ">",
	"{flow: map}", "[seq]", "yes", "no", "null", "~", "0x1F", "1e3", "@at", "'single'", `"double"`,
	"---", "...", "key: value",
	json.Number("42"), json.Number("-1.5e10"), true, false, nil,
	[]any{"a", json.Number("1"), "multi\nline"},
	map[string]any{"nested": "x\ny", "q": `"`},
}

// hostileKeys are field names that are not plain identifiers. They map to
// distinct env names (see TestEnvCollision for the ones that do not).
var hostileKeys = []string{
	"user-name", "9lives", "", "ключ", "a b", "key=val", "x\ny", "yes", "Null", "$HOME",
	"PATH`id`", `q"uote`, "colon: space", "#hash", "-dash", "true", "tab\tkey", "del\x7fkey",
}

func hostile() map[string]any {
	data := map[string]any{}
	for i, v := range hostileValues {
		data[fmt.Sprintf("v%02d", i)] = v
	}
	for _, k := range hostileKeys {
		data[k] = "value of " + k
	}
	return data
}

func TestFormatGolden(t *testing.T) {
	t.Parallel()
	for _, f := range []string{JSON, Env, YAML} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			got, err := Format(f, typical())
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "typical."+f)
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Format(%s) =\n%s\nwant (%s):\n%s", f, got, golden, want)
			}
		})
	}
}

func TestFormatIsDeterministic(t *testing.T) {
	t.Parallel()
	for _, f := range []string{JSON, Env, YAML} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			first, err := Format(f, hostile())
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				again, err := Format(f, hostile())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(first, again) {
					t.Fatal("the same data rendered to different bytes")
				}
			}
		})
	}
}

func TestFormatUnknown(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"", "JSON", "toml", "dotenv"} {
		t.Run(strconv.Quote(f), func(t *testing.T) {
			t.Parallel()
			if ValidFormat(f) {
				t.Errorf("ValidFormat(%q) = true", f)
			}
			if _, err := Format(f, typical()); err == nil || !strings.Contains(err.Error(), strconv.Quote(f)) {
				t.Errorf("Format(%q) error = %v, want one naming the format", f, err)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	for name, data := range map[string]map[string]any{"typical": typical(), "hostile": hostile(), "empty": {}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, err := Format(JSON, data)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			dec := json.NewDecoder(bytes.NewReader(out))
			dec.UseNumber()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			if !reflect.DeepEqual(got, normalize(t, data)) {
				t.Errorf("round trip changed the data:\n got %#v\nwant %#v", got, normalize(t, data))
			}
		})
	}
}

// normalize is v as a JSON reader sees it (numbers as json.Number).
func normalize(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// envText is what the env format promises for a value: strings as they
// are, anything else as JSON.
func envText(t testing.TB, v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var envNameRE = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// parseEnvLine is a strict reader of the format's promise: NAME='value'
// taken literally, with no single quote, control character, double
// backslash or final backslash in it (what some dotenv reader would read
// differently), or NAME="value" with only the escapes the format
// documents: anything a shell treats specially inside double quotes ($, `,
// ", \) must arrive escaped.
func parseEnvLine(line string) (name, value string, err error) {
	name, rest, ok := strings.Cut(line, "=")
	if !ok || !envNameRE.MatchString(name) {
		return "", "", fmt.Errorf("not NAME=...: %q", line)
	}
	if len(rest) >= 2 && rest[0] == '\'' && rest[len(rest)-1] == '\'' {
		body := rest[1 : len(rest)-1]
		if strings.ContainsFunc(body, func(r rune) bool { return r == '\'' || r < 0x20 || r == 0x7f }) ||
			strings.Contains(body, `\\`) || strings.HasSuffix(body, `\`) {
			return "", "", fmt.Errorf("single-quoted value a reader would not take literally: %q", line)
		}
		return name, body, nil
	}
	if len(rest) < 2 || rest[0] != '"' || rest[len(rest)-1] != '"' {
		return "", "", fmt.Errorf("value not quoted: %q", line)
	}
	body := rest[1 : len(rest)-1]
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '"' || c == '$' || c == '`':
			return "", "", fmt.Errorf("unescaped %q in %q", c, line)
		case c < 0x20 || c == 0x7f:
			return "", "", fmt.Errorf("raw control byte %#x in %q", c, line)
		case c == '\\':
			i++
			if i == len(body) {
				return "", "", fmt.Errorf("dangling backslash in %q", line)
			}
			switch e := body[i]; e {
			case '"', '\\', '$', '`':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 'x':
				if i+2 >= len(body) {
					return "", "", fmt.Errorf("short \\x escape in %q", line)
				}
				n, err := strconv.ParseUint(body[i+1:i+3], 16, 8)
				if err != nil {
					return "", "", fmt.Errorf("bad \\x escape in %q", line)
				}
				b.WriteByte(byte(n))
				i += 2
			default:
				return "", "", fmt.Errorf("unknown escape \\%c in %q", e, line)
			}
		default:
			b.WriteByte(c)
		}
	}
	return name, b.String(), nil
}

// parseEnv checks the whole env output: one NAME="value" line per field,
// every name distinct.
func parseEnv(out []byte) (map[string]string, error) {
	if len(out) == 0 {
		return map[string]string{}, nil
	}
	if out[len(out)-1] != '\n' {
		return nil, fmt.Errorf("output does not end with a newline")
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out[:len(out)-1]), "\n") {
		name, value, err := parseEnvLine(line)
		if err != nil {
			return nil, err
		}
		if _, dup := vars[name]; dup {
			return nil, fmt.Errorf("variable %s is set twice", name)
		}
		vars[name] = value
	}
	return vars, nil
}

func TestEnvOneLinePerField(t *testing.T) {
	t.Parallel()
	for name, data := range map[string]map[string]any{"typical": typical(), "hostile": hostile(), "empty": {}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, err := Format(Env, data)
			if err != nil {
				t.Fatal(err)
			}
			vars, err := parseEnv(out)
			if err != nil {
				t.Fatalf("%v\noutput:\n%s", err, out)
			}
			if len(vars) != len(data) {
				t.Fatalf("%d variables for %d fields:\n%s", len(vars), len(data), out)
			}
			for k, v := range data {
				got, ok := vars[envKey(k)]
				if !ok {
					t.Errorf("field %q: no variable %s", k, envKey(k))
					continue
				}
				if want := envText(t, v); got != want {
					t.Errorf("field %q: value %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestEnvNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ key, want string }{
		{"username", "USERNAME"},
		{"api_key", "API_KEY"},
		{"user-name", "USER_NAME"},
		{"user.name", "USER_NAME"},
		{"9lives", "_9LIVES"},
		{"", "_"},
		{"a b", "A_B"},
		{"key=val", "KEY_VAL"},
		{"x\ny", "X_Y"},
		{"$(id)", "__ID_"},
		{"ключ", "____"},
	} {
		t.Run(strconv.Quote(tc.key), func(t *testing.T) {
			t.Parallel()
			out, err := Format(Env, map[string]any{tc.key: "v"})
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.want + `="v"` + "\n"; string(out) != want {
				t.Errorf("got %q, want %q", out, want)
			}
		})
	}
}

// Two fields that become the same variable would set it twice, and which
// one wins depends on the reader: the format refuses instead.
func TestEnvCollision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		a, b string
	}{
		{"case", "user", "USER"},
		{"dash and underscore", "user-name", "user_name"},
		{"dot and dash", "a.b", "a-b"},
		{"empty and underscore", "", "_"},
		{"unicode", "ä", "ö"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := Format(Env, map[string]any{tc.a: "first", tc.b: "second"})
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if !strings.Contains(err.Error(), envKey(tc.a)) {
				t.Errorf("error %q does not name variable %s", err, envKey(tc.a))
			}
			if strings.Contains(err.Error(), "first") || strings.Contains(err.Error(), "second") {
				t.Errorf("error %q shows a value", err)
			}
		})
	}
}

// TestEnvSourcedByShell sources the hostile output with sh: no command may
// run, and every value without control characters (which the format
// escapes dotenv-style, as sh keeps them literal) must arrive unchanged.
func TestEnvSourcedByShell(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH")
	}
	data := hostile()
	out, err := Format(Env, data)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "secret.env")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	script := `. ./secret.env || exit 1` + "\n"
	for k := range data {
		n := envKey(k)
		if n == "_" { // the shell's own $_
			continue
		}
		names = append(names, k)
		script += fmt.Sprintf("printf '%%s\\0' \"$%s\"\n", n)
	}
	cmd := exec.Command(sh, "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("sourcing the env file ran a command from a value")
	}
	values := strings.Split(string(got), "\x00")
	if len(values) != len(names)+1 {
		t.Fatalf("sh printed %d values, want %d", len(values)-1, len(names))
	}
	for i, k := range names {
		want := envText(t, data[k])
		if strings.ContainsFunc(want, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			continue
		}
		if values[i] != want {
			t.Errorf("field %q: sh sees %q, want %q", k, values[i], want)
		}
	}
}

var (
	plainKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)
	yamlSpecial = map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true, "true": true, "false": true, "null": true}
)

// yamlForbidden reports characters a YAML reader rejects (C0 controls but
// tab, DEL, C1 controls, BOM, non-characters) or takes as a line break
// (NEL, LS, PS).
func yamlForbidden(r rune) bool {
	return (r < 0x20 && r != '\t') || (r >= 0x7f && r <= 0x9f) || r == 0x2028 || r == 0x2029 ||
		r == 0xfeff || r == 0xfffe || r == 0xffff
}

// parseYAML is a strict reader for the yaml format's promise: one
// `KEY: VALUE` line per field, KEY a plain identifier YAML cannot read as
// anything but a string or a JSON string literal, VALUE a JSON value (JSON
// is YAML's flow style), and no character a YAML reader rejects.
func parseYAML(out []byte) (map[string]any, error) {
	got := map[string]any{}
	if len(out) == 0 {
		return got, nil
	}
	if !utf8.Valid(out) {
		return nil, fmt.Errorf("output is not UTF-8")
	}
	if out[len(out)-1] != '\n' {
		return nil, fmt.Errorf("output does not end with a newline")
	}
	for _, line := range strings.Split(string(out[:len(out)-1]), "\n") {
		if i := strings.IndexFunc(line, yamlForbidden); i >= 0 {
			r, _ := utf8.DecodeRuneInString(line[i:])
			return nil, fmt.Errorf("character %U in %q", r, line)
		}
		var key, rest string
		if strings.HasPrefix(line, `"`) {
			dec := json.NewDecoder(strings.NewReader(line))
			if err := dec.Decode(&key); err != nil {
				return nil, fmt.Errorf("quoted key in %q: %v", line, err)
			}
			rest = line[dec.InputOffset():]
		} else {
			var ok bool
			key, rest, ok = strings.Cut(line, ":")
			if !ok || !plainKeyRE.MatchString(key) || yamlSpecial[strings.ToLower(key)] {
				return nil, fmt.Errorf("plain key YAML may not read as a string in %q", line)
			}
			rest = ":" + rest
		}
		value, ok := strings.CutPrefix(rest, ": ")
		if !ok {
			return nil, fmt.Errorf("no ': ' after the key in %q", line)
		}
		if _, dup := got[key]; dup {
			return nil, fmt.Errorf("key %q twice", key)
		}
		var v any
		dec := json.NewDecoder(strings.NewReader(value))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil || dec.More() {
			return nil, fmt.Errorf("value in %q is not one JSON value: %v", line, err)
		}
		if _, err := dec.Token(); err == nil {
			return nil, fmt.Errorf("trailing text in %q", line)
		}
		got[key] = v
	}
	return got, nil
}

func TestYAMLRoundTrip(t *testing.T) {
	t.Parallel()
	for name, data := range map[string]map[string]any{"typical": typical(), "hostile": hostile(), "empty": {}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, err := Format(YAML, data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseYAML(out)
			if err != nil {
				t.Fatalf("%v\noutput:\n%s", err, out)
			}
			if want := normalize(t, data); !reflect.DeepEqual(any(got), want) {
				t.Errorf("round trip changed the data:\n got %#v\nwant %#v", got, want)
			}
		})
	}
}

// Characters JSON leaves raw but YAML readers reject: PyYAML says
// "unacceptable character #x007f" and folds U+0085 into a space.
func TestYAMLEscapesWhatYAMLRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, value, want string }{
		{"DEL", "a\x7fb", `"a\u007fb"`},
		{"NEL", "a\u0085b", `"a\u0085b"`},
		{"C1", "a\u0086b", `"a\u0086b"`},
		{"BOM", "a\ufeffb", `"a\ufeffb"`},
		{"non-character", "a\uffffb", `"a\uffffb"`},
		{"line separator", "a\u2028b", `"a\u2028b"`},
		{"unicode stays", "日本🔑", `"日本🔑"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := Format(YAML, map[string]any{"k": tc.value, tc.value: "v"})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(out), "k: "+tc.want+"\n") || !strings.Contains(string(out), tc.want+`: "v"`+"\n") {
				t.Errorf("got\n%s\nwant the value and the key as %s", out, tc.want)
			}
		})
	}
}

func TestYAMLKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ key, want string }{
		{"username", "username"},
		{"api_key", "api_key"},
		{"user-name", "user-name"},
		{"yes", `"yes"`},
		{"No", `"No"`},
		{"TRUE", `"TRUE"`},
		{"null", `"null"`},
		{"9lives", `"9lives"`},
		{"-dash", `"-dash"`},
		{"", `""`},
		{"a b", `"a b"`},
		{"colon: space", `"colon: space"`},
		{"x\ny", `"x\ny"`},
	} {
		t.Run(strconv.Quote(tc.key), func(t *testing.T) {
			t.Parallel()
			out, err := Format(YAML, map[string]any{tc.key: "v"})
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.want + `: "v"` + "\n"; string(out) != want {
				t.Errorf("got %q, want %q", out, want)
			}
		})
	}
}

// TestEnvRefusesDangerousNames: a field that becomes PATH, LD_PRELOAD,
// BASH_ENV, IFS... would change what a shell or program that loads the
// file runs; the env format refuses it with a message naming the field and
// the variable, never the value.
func TestEnvRefusesDangerousNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ field, variable string }{
		{"path", "PATH"},
		{"Path", "PATH"},
		{"ld_preload", "LD_PRELOAD"},
		{"ld-library-path", "LD_LIBRARY_PATH"},
		{"LD_AUDIT", "LD_AUDIT"},
		{"bash_env", "BASH_ENV"},
		{"env", "ENV"},
		{"ifs", "IFS"},
		{"ps4", "PS4"},
		{"shellopts", "SHELLOPTS"},
		{"prompt_command", "PROMPT_COMMAND"},
		{"BASH_FUNC_x%%", "BASH_FUNC_X__"},
		{"node.options", "NODE_OPTIONS"},
		{"jdk_java_options", "JDK_JAVA_OPTIONS"},
		{"_java_options", "_JAVA_OPTIONS"},
		{"java-opts", "JAVA_OPTS"},
		{"classpath", "CLASSPATH"},
		{"dotnet_startup_hooks", "DOTNET_STARTUP_HOOKS"},
		{"coreclr_profiler_path", "CORECLR_PROFILER_PATH"},
		{"pythonwarnings", "PYTHONWARNINGS"},
		{"pythonbreakpoint", "PYTHONBREAKPOINT"},
		{"perl5db", "PERL5DB"},
		{"perl5opt", "PERL5OPT"},
		{"rubyopt", "RUBYOPT"},
		{"lua_init", "LUA_INIT"},
		{"lua_cpath_5_4", "LUA_CPATH_5_4"},
		{"phprc", "PHPRC"},
		{"openssl_conf", "OPENSSL_CONF"},
		{"git_ssh_command", "GIT_SSH_COMMAND"},
		{"git_config_count", "GIT_CONFIG_COUNT"},
		{"editor", "EDITOR"},
		{"ps0", "PS0"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			t.Parallel()
			out, err := Format(Env, map[string]any{"username": "u", tc.field: "/tmp/evil-value"})
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			for _, want := range []string{strconv.Quote(tc.field), tc.variable, "json"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "evil-value") {
				t.Errorf("error %q shows the value", err)
			}
		})
	}
	for _, field := range []string{"path_prefix", "my_path", "environment", "ldap_url", "home", "git_token", "java_home", "lua_version", "openssl_version", "editor_id"} {
		if _, err := Format(Env, map[string]any{field: "v"}); err != nil {
			t.Errorf("field %q refused: %v", field, err)
		}
	}
}

// TestEnvRefusedNamesDocumented: every refused variable is in the table
// of docs/troubleshooting.md that users land on when a field is refused.
func TestEnvRefusedNamesDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range refusedEnvNames {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("%s is refused but not in docs/troubleshooting.md", name)
		}
	}
	for _, p := range refusedEnvPrefixes {
		if !strings.Contains(string(doc), "`"+p+"*`") {
			t.Errorf("%s* is refused but not in docs/troubleshooting.md", p)
		}
	}
}

// TestEnvMultilineValue pins what the docs say about a multi-line value in
// the env format: it stays on one line; a dotenv reader gets the newline
// back; a shell that sources the file sees a backslash and an n instead.
// EnvEscapedFields names such fields so that vault-init can warn.
func TestEnvMultilineValue(t *testing.T) {
	t.Parallel()
	pem := "-----BEGIN KEY-----\nMIIB\n-----END KEY-----"
	data := map[string]any{"cert": pem, "user": "u", "tabbed": "a\tb", "list": []any{"x\ny"}}
	out, err := Format(Env, data)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "\n"); n != len(data) {
		t.Fatalf("%d lines for %d fields:\n%s", n, len(data), out)
	}
	vars, err := parseEnv(out)
	if err != nil || vars["CERT"] != pem {
		t.Errorf("dotenv reader: CERT = %q (%v), want the PEM with its newlines", vars["CERT"], err)
	}
	if got, want := EnvEscapedFields(data), []string{"cert", "tabbed"}; !reflect.DeepEqual(got, want) {
		t.Errorf("EnvEscapedFields = %v, want %v", got, want)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal("no sh on PATH")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret.env"), out, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "-c", `. ./secret.env && printf '%s' "$CERT"`)
	cmd.Dir = dir
	got, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ReplaceAll(pem, "\n", `\n`); string(got) != want {
		t.Errorf("sh sees CERT = %q, want %q (the escape, not a newline)", got, want)
	}
}
