package render

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The readers below follow the parsers of the three dotenv libraries apps
// load env files with, rule for rule, over the whole file (a value that
// does not end where it should runs into the next line, as it does in the
// library): python-dotenv 1.2.2 (dotenv/parser.py, with the ${NAME}
// interpolation dotenv_values and load_dotenv do by default), godotenv
// (joho/godotenv parser.go) and Node's dotenv 17 (lib/main.js, the default
// regex parser). The environment they would fall back on is empty.

var (
	pyMultilineWS   = regexp.MustCompile(`^\s*`)
	pyExport        = regexp.MustCompile(`^(?:export[^\S\r\n]+)?`)
	pySingleKey     = regexp.MustCompile(`^'([^']+)'`)
	pyUnquotedKey   = regexp.MustCompile(`^([^=#\s]+)`)
	pyWhitespace    = regexp.MustCompile(`^[^\S\r\n]*`)
	pyEqualSign     = regexp.MustCompile(`^(=[^\S\r\n]*)`)
	pySingleValue   = regexp.MustCompile(`^'((?:\\'|[^'])*)'`)
	pyDoubleValue   = regexp.MustCompile(`^"((?:\\"|[^"])*)"`)
	pyUnquotedValue = regexp.MustCompile(`^([^\r\n]*)`)
	pyComment       = regexp.MustCompile(`^(?:[^\S\r\n]*#[^\r\n]*)?`)
	pyEndOfLine     = regexp.MustCompile(`^[^\S\r\n]*(?:\r\n|\n|\r|$)`)
	pyRestOfLine    = regexp.MustCompile(`^[^\r\n]*(?:\r|\n|\r\n)?`)
	pySingleEscapes = regexp.MustCompile(`\\[\\']`)
	pyDoubleEscapes = regexp.MustCompile(`\\[\\'"abfnrtv]`)
	pyVariable      = regexp.MustCompile(`\$\{([^}:]*)(?::-([^}]*))?\}`)
	pyEscapeValue   = map[byte]string{'\\': `\`, '\'': `'`, '"': `"`, 'a': "\a", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v"}
)

// readPythonDotenv is dotenv_values(path) of python-dotenv.
func readPythonDotenv(src string) map[string]string {
	out := map[string]string{}
	pos := 0
	read := func(re *regexp.Regexp) ([]string, bool) {
		m := re.FindStringSubmatch(src[pos:])
		if m == nil {
			return nil, false
		}
		pos += len(m[0])
		return m[1:], true
	}
	decode := func(re *regexp.Regexp, s string) string {
		return re.ReplaceAllStringFunc(s, func(m string) string { return pyEscapeValue[m[1]] })
	}
	binding := func() (key, value string, ok bool) {
		read(pyMultilineWS)
		if pos == len(src) {
			return "", "", false
		}
		read(pyExport)
		switch {
		case strings.HasPrefix(src[pos:], "#"):
			read(pyWhitespace)
			read(pyComment)
			read(pyEndOfLine)
			return "", "", false
		case strings.HasPrefix(src[pos:], "'"):
			m, found := read(pySingleKey)
			if !found {
				return "", "", false
			}
			key = m[0]
		default:
			m, found := read(pyUnquotedKey)
			if !found {
				return "", "", false
			}
			key = m[0]
		}
		read(pyWhitespace)
		if !strings.HasPrefix(src[pos:], "=") {
			return "", "", false
		}
		read(pyEqualSign)
		switch {
		case strings.HasPrefix(src[pos:], "'"):
			m, found := read(pySingleValue)
			if !found {
				return "", "", false
			}
			value = decode(pySingleEscapes, m[0])
		case strings.HasPrefix(src[pos:], `"`):
			m, found := read(pyDoubleValue)
			if !found {
				return "", "", false
			}
			value = decode(pyDoubleEscapes, m[0])
		default:
			m, _ := read(pyUnquotedValue)
			value = strings.TrimRight(regexp.MustCompile(`\s+#.*`).ReplaceAllString(m[0], ""), " \t\r\n\v\f")
		}
		read(pyComment)
		if _, found := read(pyEndOfLine); !found {
			return "", "", false
		}
		return key, value, true
	}
	for pos < len(src) {
		start := pos
		key, value, ok := binding()
		if !ok {
			// A binding that does not parse is skipped to the end of its line.
			if pos == start || !strings.HasSuffix(src[start:pos], "\n") {
				read(pyRestOfLine)
			}
			if pos == start {
				break
			}
			continue
		}
		out[key] = pyVariable.ReplaceAllStringFunc(value, func(m string) string {
			sub := pyVariable.FindStringSubmatch(m)
			if v, ok := out[sub[1]]; ok {
				return v
			}
			return sub[2]
		})
	}
	return out
}

var (
	goEscape         = regexp.MustCompile(`\\.`)
	goExpandVariable = regexp.MustCompile(`(\\)?(\$)(\()?\{?([A-Z0-9_]+)?\}?`)
	goUnescapeChars  = regexp.MustCompile(`\\([^$])`)
)

// readGodotenv is godotenv.Read: it fails on a quote it cannot find the
// end of.
func readGodotenv(src string) (map[string]string, error) {
	out := map[string]string{}
	s := strings.ReplaceAll(strings.ReplaceAll(src, "---\n", "\n"), "\r\n", "\n")
	isSpace := func(c byte) bool {
		return c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == ' ' || c == 0x85 || c == 0xa0
	}
	expand := func(v string) string {
		return goExpandVariable.ReplaceAllStringFunc(v, func(m string) string {
			sub := goExpandVariable.FindStringSubmatch(m)
			switch {
			case sub[1] == `\` || sub[3] == "(":
				return sub[0][1:]
			case sub[4] != "":
				return out[sub[4]]
			}
			return m
		})
	}
	for {
		s = strings.TrimLeft(s, " \t\n\v\f\r\u0085\u00a0")
		if s == "" {
			return out, nil
		}
		if s[0] == '#' {
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return out, nil
			}
			s = s[i:]
			continue
		}
		s = strings.TrimPrefix(s, "export ")
		eq := strings.IndexAny(s, "=:")
		if eq < 0 {
			return nil, fmt.Errorf("no = in %q", s)
		}
		key := strings.TrimRight(s[:eq], " \t")
		s = strings.TrimLeftFunc(s[eq+1:], func(r rune) bool { return r < 0x100 && isSpace(byte(r)) })
		if s == "" || (s[0] != '\'' && s[0] != '"') {
			end := strings.IndexAny(s, "\n\r")
			if end < 0 {
				end = len(s)
			}
			out[key] = expand(strings.TrimSpace(s[:end]))
			s = s[end:]
			continue
		}
		q, end := s[0], -1
		for i := 1; i < len(s); i++ {
			if s[i] == q && s[i-1] != '\\' {
				end = i
				break
			}
		}
		if end < 0 {
			return nil, fmt.Errorf("unterminated quoted value for %s", key)
		}
		value := strings.Trim(s[:end], string(q))
		if q == '"' {
			value = goEscape.ReplaceAllStringFunc(value, func(m string) string {
				switch m[1] {
				case 'n':
					return "\n"
				case 'r':
					return "\r"
				}
				return m
			})
			value = expand(goUnescapeChars.ReplaceAllString(value, "$1"))
		}
		out[key] = value
		s = s[end+1:]
	}
}

var nodeLine = regexp.MustCompile(`(?m)(?:^|^)\s*(?:export\s+)?([\w.-]+)(?:\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|\s*` + "`(?:\\\\`|[^`])*`" + `|[^#\r\n]+)?\s*(?:#.*)?(?:$|$)`)

// readNodeDotenv is dotenv.parse of Node's dotenv.
func readNodeDotenv(src string) map[string]string {
	out := map[string]string{}
	src = regexp.MustCompile(`\r\n?`).ReplaceAllString(src, "\n")
	for _, m := range nodeLine.FindAllStringSubmatch(src, -1) {
		value := strings.TrimSpace(m[2])
		quote := byte(0)
		if value != "" {
			quote = value[0]
		}
		if len(value) >= 2 && strings.IndexByte("'\"`", value[0]) >= 0 && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		if quote == '"' {
			value = strings.ReplaceAll(strings.ReplaceAll(value, `\n`, "\n"), `\r`, "\r")
		}
		out[m[1]] = value
	}
	return out
}

// TestEnvDotenvReadersAgree: every value the env format writes without a
// warning is read exactly as it is in Vault by python-dotenv, godotenv and
// Node's dotenv, and so are the lines around it; the values they may read
// differently are named by EnvDotenvFields (or EnvEscapedFields), so that
// vault-init warns. TestEnvSourcedByShell checks the same values with sh.
func TestEnvDotenvReadersAgree(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value    string
		line     string // what the env format writes
		dotenvOK bool   // every dotenv reader gets the value: no warning
	}{
		{"A1a-9ZmQ2pLrT0k", `V="A1a-9ZmQ2pLrT0k"`, true},
		{`p"a\s$w` + "`d", `V='p"a\s$w` + "`d'", true},
		{`DOMAIN\user`, `V='DOMAIN\user'`, true},
		{"$HOME $(id) `id` $((1+1))", "V='$HOME $(id) `id` $((1+1))'", true},
		{`\n not a newline`, `V='\n not a newline'`, true},
		{`\"`, `V='\"'`, true},
		{"it's", `V="it's"`, true},
		{`it's "quoted"`, `V="it's \"quoted\""`, false},
		{`it's $HOME`, `V="it's \$HOME"`, false},
		{`x\\y`, `V="x\\\\y"`, false},
		{`back\slash\`, `V="back\\slash\\"`, false},
		{`a ${HOME} b`, `V='a ${HOME} b'`, false},
		{"# not a comment", `V="# not a comment"`, true},
		{"  spaced  ", `V="  spaced  "`, true},
		{"", `V=""`, true},
		{"ünïcødé 🔑 ls\u2028", "V=\"ünïcødé 🔑 ls\u2028\"", true},
	} {
		data := map[string]any{"a": "before", "v": tc.value, "z": "after"}
		out, err := Format(Env, data)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(string(out), "\n"); len(lines) != 4 || lines[1] != tc.line {
			t.Errorf("%q: written as %q, want the line %q", tc.value, out, tc.line)
		}
		warned := slices.Contains(EnvDotenvFields(data), "v") || slices.Contains(EnvEscapedFields(data), "v")
		if warned == tc.dotenvOK {
			t.Errorf("%q: named by EnvDotenvFields: %v, want %v", tc.value, warned, !tc.dotenvOK)
		}
		if !tc.dotenvOK {
			continue
		}
		want := map[string]string{"A": "before", "V": tc.value, "Z": "after"}
		god, err := readGodotenv(string(out))
		if err != nil {
			t.Errorf("%q: godotenv: %v", tc.value, err)
		}
		for reader, got := range map[string]map[string]string{
			"python-dotenv": readPythonDotenv(string(out)),
			"godotenv":      god,
			"Node's dotenv": readNodeDotenv(string(out)),
		} {
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%q: %s reads %s as %q, want %q", tc.value, reader, k, got[k], v)
				}
			}
		}
	}
}

// TestDotenvReaders pins the readers above to what their libraries are
// known to do, so that the test above is not checked against readers that
// agree with the format by mistake.
func TestDotenvReaders(t *testing.T) {
	t.Parallel()
	src := `A="p\"a\\s\$w\` + "`" + `d"
B='x\\y'
C="a\\nb"
D="tab\x09"
E='${HOME}'
F="back\\"
G="next"
`
	py := readPythonDotenv(src)
	for k, want := range map[string]string{"A": `p"a\s\$w\` + "`d", "B": `x\y`, "C": `a\nb`, "D": `tab\x09`, "E": ""} {
		if py[k] != want {
			t.Errorf("python-dotenv reads %s as %q, want %q", k, py[k], want)
		}
	}
	if py["F"] == `back\` || py["G"] == "next" {
		t.Errorf("python-dotenv reads F, G as %q, %q: a value ending in \\\\ ends there, where the library reads on", py["F"], py["G"])
	}
	node := readNodeDotenv(src)
	for k, want := range map[string]string{"A": `p\"a\\s\$w\` + "`d", "B": `x\\y`, "C": "a\\\nb", "E": "${HOME}", "G": "next"} {
		if node[k] != want {
			t.Errorf("Node's dotenv reads %s as %q, want %q", k, node[k], want)
		}
	}
	god, err := readGodotenv(strings.Replace(src, `F="back\\"`+"\n", "", 1))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"A": `p"a\s$w` + "`d", "B": `x\\y`, "C": `a\nb`, "D": "tabx09", "E": "${HOME}", "G": "next"} {
		if god[k] != want {
			t.Errorf("godotenv reads %s as %q, want %q", k, god[k], want)
		}
	}
	if _, err := readGodotenv("F=\"back\\\\\"\n"); err == nil {
		t.Error("godotenv reads a double-quoted value ending in \\\\ without error")
	}
}
