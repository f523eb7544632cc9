package render

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"dario.cat/mergo"
	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v2"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// The data functions of consul-template, with its argument order (the
// piped value last) and its output bytes. The YAML and TOML encoders are
// the ones consul-template uses, so toYAML and toTOML give the same text
// as Vault Agent.
//
// Their errors differ from consul-template's on purpose: an argument may
// be a secret or a piece of one (split, upper-cased, decoded), which no
// redaction of whole values can find again, so an error names the
// function and the cause, never an argument or a part of it. Where a
// library's error quotes its input (strconv, regexp, encoding/json,
// YAML, TOML, mergo), the function returns only the cause.

// now is the clock of timestamp; tests replace it.
var now = func() time.Time { return time.Now().UTC() }

// dataFuncs returns the functions that work on data alone. The map is
// built when a template is parsed, only when a --template is given, so a
// start without templates pays nothing for it. cur returns the render
// under way.
func dataFuncs(tmpl *template.Template, cur func() *render) template.FuncMap {
	m := template.FuncMap{
		// text/template's own, with the same output, so that what they
		// build is charged to the render too.
		"printf":                printf,
		"print":                 checkedArgs("print", fmt.Sprint),
		"println":               checkedArgs("println", fmt.Sprintln),
		"html":                  checkedArgs("html", template.HTMLEscaper),
		"js":                    checkedArgs("js", template.JSEscaper),
		"urlquery":              checkedArgs("urlquery", template.URLQueryEscaper),
		"base64Decode":          base64Decode,
		"base64Encode":          base64Encode,
		"base64URLDecode":       base64URLDecode,
		"base64URLEncode":       base64URLEncode,
		"contains":              contains,
		"containsAll":           containsSome(true, true),
		"containsAny":           containsSome(false, false),
		"containsNone":          containsSome(true, false),
		"containsNotAll":        containsSome(false, true),
		"env":                   env,
		"mustEnv":               mustEnv,
		"envOrDefault":          envOrDefault,
		"executeTemplate":       executeTemplate(tmpl, cur),
		"explode":               explode,
		"explodeMap":            explodeMap,
		"mergeMap":              mergeMap,
		"mergeMapWithOverride":  mergeMapWithOverride,
		"in":                    in,
		"indent":                indent,
		"loop":                  loop(cur),
		"join":                  join,
		"trim":                  trim,
		"trimPrefix":            trimPrefix,
		"trimSuffix":            trimSuffix,
		"trimSpace":             trimSpace,
		"parseBool":             parseBool,
		"parseFloat":            parseFloat,
		"parseInt":              parseInt,
		"parseJSON":             parseJSON,
		"parseUint":             parseUint,
		"parseYAML":             parseYAMLValue,
		"regexReplaceAll":       regexReplaceAll,
		"regexMatch":            regexMatch,
		"replaceAll":            replaceAll,
		"sha256Hex":             sha256Hex,
		"md5sum":                md5sum,
		"hmacSHA256Hex":         hmacSHA256Hex,
		"timestamp":             timestamp,
		"toLower":               toLower,
		"toJSON":                toJSON,
		"toJSONPretty":          toJSONPretty,
		"toUnescapedJSON":       toUnescapedJSON,
		"toUnescapedJSONPretty": toUnescapedJSONPretty,
		"toTitle":               toTitle,
		"toTOML":                toTOML,
		"toUpper":               toUpper,
		"toYAML":                toYAML,
		"split":                 split,
		"splitToMap":            splitToMap,
		"add":                   add,
		"subtract":              subtract,
		"multiply":              multiply,
		"divide":                divide,
		"modulo":                modulo,
		"minimum":               minimum,
		"maximum":               maximum,
	}
	for name, fn := range m {
		m[name] = charged(name, fn, cur)
	}
	return m
}

// checkedArgs is f, refusing arguments that would make a string longer
// than MaxOutput before f builds it.
func checkedArgs(name string, f func(...any) string) func(...any) (string, error) {
	return func(a ...any) (string, error) {
		if err := argsFit(name, a); err != nil {
			return "", err
		}
		return f(a...), nil
	}
}

func base64Decode(s string) (string, error) {
	v, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", errors.New("base64Decode: not valid base64")
	}
	return string(v), nil
}

func base64Encode(s string) (string, error) { return base64.StdEncoding.EncodeToString([]byte(s)), nil }

func base64URLDecode(s string) (string, error) {
	v, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		return "", errors.New("base64URLDecode: not valid URL-safe base64")
	}
	return string(v), nil
}

func base64URLEncode(s string) (string, error) {
	return base64.URLEncoding.EncodeToString([]byte(s)), nil
}

// contains is in with its arguments swapped, for pipelines:
// {{ .list | contains "x" }}.
func contains(v, l any) (bool, error) { return in(l, v) }

// containsSome builds containsAll, containsAny, containsNone and
// containsNotAll: it walks v and stops at the first element whose presence
// in l differs from invert.
func containsSome(retTrue, invert bool) func([]any, any) (bool, error) {
	return func(v []any, l any) (bool, error) {
		for _, x := range v {
			if ok, _ := in(l, x); ok != invert {
				return !retTrue, nil
			}
		}
		return retTrue, nil
	}
}

// in reports whether l (a list, or a string) holds v: list elements match
// a signed integer, a float or a string of the same type as v; a string
// matches a substring of the same type.
func in(l, v any) (bool, error) {
	lv, vv := reflect.ValueOf(l), reflect.ValueOf(v)
	if !vv.IsValid() {
		return false, nil
	}
	switch lv.Kind() {
	case reflect.Array, reflect.Slice:
		for i := 0; i < lv.Len(); i++ {
			e := lv.Index(i)
			if e.Kind() == reflect.Interface {
				e = e.Elem()
			}
			switch e.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				switch vv.Kind() {
				case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
					if vv.Int() == e.Int() {
						return true, nil
					}
				}
			case reflect.Float32, reflect.Float64:
				switch vv.Kind() {
				case reflect.Float32, reflect.Float64:
					if vv.Float() == e.Float() {
						return true, nil
					}
				}
			case reflect.String:
				if vv.Type() == e.Type() && vv.String() == e.String() {
					return true, nil
				}
			}
		}
	case reflect.String:
		if vv.Type() == lv.Type() && strings.Contains(lv.String(), vv.String()) {
			return true, nil
		}
	}
	return false, nil
}

// tokenVar is never handed to a template: the Vault token must not land in
// a file the app reads.
const tokenVar = "VAULT_TOKEN"

func envAllowed(name string) error {
	if name == tokenVar {
		return fmt.Errorf("env %s: the Vault token is never written into a secret file", name)
	}
	return nil
}

// env is the variable of the process that renders: vault-init at start,
// vault-renew at each rotation.
func env(name string) (string, error) {
	if err := envAllowed(name); err != nil {
		return "", err
	}
	return os.Getenv(name), nil
}

func mustEnv(name string) (string, error) {
	if err := envAllowed(name); err != nil {
		return "", err
	}
	v := os.Getenv(name)
	if v == "" {
		return "", errors.New("mustEnv: the required environment variable is empty or unset")
	}
	return v, nil
}

// envOrDefault returns the variable when it is set, even to "", else def.
func envOrDefault(name, def string) (string, error) {
	if err := envAllowed(name); err != nil {
		return "", err
	}
	if v, ok := os.LookupEnv(name); ok {
		return v, nil
	}
	return def, nil
}

// executeTemplate runs a {{ define }}d template of t, with an optional
// dot, within the bounds of the render under way.
func executeTemplate(t *template.Template, cur func() *render) func(string, ...any) (string, error) {
	return func(name string, data ...any) (string, error) {
		var dot any
		switch len(data) {
		case 0:
		case 1:
			dot = data[0]
		default:
			return "", fmt.Errorf("executeTemplate: wrong number of arguments, expected 1 or 2, but got %d", len(data)+1)
		}
		b := cur().budget
		if b.depth >= maxTemplateDepth {
			b.err = errTooDeep
			return "", b.err
		}
		b.depth++
		defer func() { b.depth-- }()
		var buf bytes.Buffer
		// Its output is its result, which charged counts once returned.
		w := budgetWriter{&buf, func(n int) error {
			if err := fits("executeTemplate", buf.Len()+n); err != nil {
				return err
			}
			return b.check()
		}}
		if err := t.ExecuteTemplate(w, name, dot); err != nil {
			if b.err != nil {
				return "", b.err // not wrapped once per level
			}
			return "", err
		}
		return buf.String(), nil
	}
}

// printf is text/template's printf, refusing a result that would be
// longer than MaxOutput (see checkPrintf).
func printf(format string, args ...any) (string, error) {
	if err := checkPrintf(format, args); err != nil {
		return "", err
	}
	return fmt.Sprintf(format, args...), nil
}

// KeyPair is a Consul KV entry, the input of explode. Consul's ls and tree,
// which yield them, are not available in podlease, so explode only exists
// for templates that keep it behind a branch; explodeMap is its useful twin.
type KeyPair struct {
	Key, Value string
}

func explode(pairs []*KeyPair) (map[string]any, error) {
	m := map[string]any{}
	for _, p := range pairs {
		if err := explodeInto(m, p.Key, p.Value); err != nil {
			return nil, fmt.Errorf("explode: %w", err)
		}
	}
	return m, nil
}

// explodeInto sets the "a/b/c" key k of m as nested maps.
func explodeInto(m map[string]any, k string, v any) error {
	if top, rest, nested := strings.Cut(k, "/"); nested {
		if _, ok := m[top]; !ok {
			m[top] = map[string]any{}
		}
		next, ok := m[top].(map[string]any)
		if !ok {
			return errors.New(`a key is both a value and the parent of another key (as "a" and "a/b")`)
		}
		return explodeInto(next, rest, v)
	}
	if k != "" {
		m[k] = v
	}
	return nil
}

// explodeMap turns {"a/b": 1} into {"a": {"b": 1}}.
func explodeMap(in map[string]any) (map[string]any, error) {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]any{}
	for _, k := range keys {
		if err := explodeInto(out, k, in[k]); err != nil {
			return nil, fmt.Errorf("explodeMap: %w", err)
		}
	}
	return out, nil
}

// mergeMap fills what dst lacks from src (dst wins), in place, with the
// library consul-template uses so nested maps merge the same way.
func mergeMap(dst, src map[string]any) (map[string]any, error) {
	if err := mergo.Map(&dst, src); err != nil {
		return nil, mergeErr("mergeMap", err)
	}
	return dst, nil
}

// mergeMapWithOverride is mergeMap where src wins.
func mergeMapWithOverride(dst, src map[string]any) (map[string]any, error) {
	if err := mergo.Map(&dst, src, mergo.WithOverride); err != nil {
		return nil, mergeErr("mergeMapWithOverride", err)
	}
	return dst, nil
}

// mergeErr keeps mergo's fixed messages and replaces those that name a
// key of the maps.
func mergeErr(name string, err error) error {
	for _, fixed := range []error{mergo.ErrNilArguments, mergo.ErrDifferentArgumentsTypes, mergo.ErrNotSupported,
		mergo.ErrExpectedMapAsDestination, mergo.ErrExpectedStructAsDestination, mergo.ErrNonPointerArgument} {
		if errors.Is(err, fixed) {
			return fmt.Errorf("%s: %w", name, fixed)
		}
	}
	return fmt.Errorf("%s: the maps hold values of different types under the same key", name)
}

// indent prefixes every line that is not empty with n spaces.
func indent(n int, s string) (string, error) {
	if n < 0 {
		return "", fmt.Errorf("indent value must be a positive integer")
	}
	lines := 0
	for i := 0; i < len(s); i++ {
		if (i == 0 || s[i-1] == '\n') && s[i] != '\n' {
			lines++
		}
	}
	if lines > 0 && n > MaxOutput/lines {
		return "", fits("indent", MaxOutput+1)
	}
	if err := fits("indent", len(s)+n*lines); err != nil {
		return "", err
	}
	prefix := strings.Repeat(" ", n)
	var b strings.Builder
	lineStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if lineStart && c != '\n' {
			b.WriteString(prefix)
		}
		b.WriteByte(c)
		lineStart = c == '\n'
	}
	return b.String(), nil
}

// loop yields start..stop-1 (loop N counts from 0) on a channel, as
// consul-template's does, so a range over it takes one or two variables
// alike. The feeding goroutine ends when the render ends (done), so a
// range that stops early leaves nothing running in vault-renew.
func loop(cur func() *render) func(args ...any) (<-chan int64, error) {
	return func(args ...any) (<-chan int64, error) {
		to64 := func(v any) (int64, error) {
			rv := reflect.ValueOf(v)
			switch rv.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				return rv.Int(), nil
			case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				return int64(rv.Uint()), nil
			case reflect.String:
				return parseInt(rv.String())
			}
			return 0, fmt.Errorf("loop: bad argument type: %T", v)
		}
		var a, b any
		switch len(args) {
		case 1:
			a, b = 0, args[0]
		case 2:
			a, b = args[0], args[1]
		default:
			return nil, fmt.Errorf("loop: wrong number of arguments, expected 1 or 2, but got %d", len(args))
		}
		start, err := to64(a)
		if err != nil {
			return nil, err
		}
		stop, err := to64(b)
		if err != nil {
			return nil, err
		}
		ch, end, bud := make(chan int64), cur().done, cur().budget
		go func() {
			defer close(ch)
			for i := start; i < stop; i++ {
				if bud.overdue() {
					return // the render fails: Execute checks the budget
				}
				select {
				case ch <- i:
				case <-end:
					return
				}
			}
		}()
		return ch, nil
	}
}

func join(sep string, a []string) (string, error) {
	n := len(sep) * max(len(a)-1, 0)
	for _, s := range a {
		n += len(s)
	}
	if err := fits("join", n); err != nil {
		return "", err
	}
	return strings.Join(a, sep), nil
}

func trim(cutset, s string) (string, error) { return strings.Trim(s, cutset), nil }

func trimPrefix(prefix, s string) (string, error) { return strings.TrimPrefix(s, prefix), nil }

func trimSuffix(suffix, s string) (string, error) { return strings.TrimSuffix(s, suffix), nil }

func trimSpace(s string) (string, error) { return strings.TrimSpace(s), nil }

// The parse functions read "" as the zero value, as consul-template does.

// parseErr is strconv's cause ("invalid syntax", "value out of range")
// without the text strconv quotes with it.
func parseErr(name string, err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		err = ne.Err
	}
	return fmt.Errorf("%s: %w", name, err)
}

func parseBool(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, parseErr("parseBool", err)
	}
	return v, nil
}

func parseFloat(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, parseErr("parseFloat", err)
	}
	return v, nil
}

func parseInt(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, parseErr("parseInt", err)
	}
	return v, nil
}

func parseUint(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, parseErr("parseUint", err)
	}
	return v, nil
}

func parseJSON(s string) (any, error) {
	if s == "" {
		return map[string]any{}, nil
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, errors.New("parseJSON: not valid JSON")
	}
	return v, nil
}

// parseYAMLValue gives YAML v2's shapes (maps keyed by any), like consul-template.
func parseYAMLValue(s string) (any, error) {
	if s == "" {
		return map[string]any{}, nil
	}
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return nil, errors.New("parseYAML: not valid YAML")
	}
	return v, nil
}

func replaceAll(from, to, s string) (string, error) {
	if n := strings.Count(s, from); n > 0 && len(to) > len(from) {
		if n > MaxOutput/(len(to)-len(from)) {
			return "", fits("replaceAll", MaxOutput+1)
		}
		if err := fits("replaceAll", len(s)+n*(len(to)-len(from))); err != nil {
			return "", err
		}
	}
	return strings.ReplaceAll(s, from, to), nil
}

// regexReplaceAll is regexp's ReplaceAllString, building the result match
// by match so that it stops at MaxOutput: before each expansion, each $ in
// repl counts for the longest submatch of that match.
func regexReplaceAll(re, repl, s string) (string, error) {
	c, err := regexp.Compile(re)
	if err != nil {
		return "", regexErr("regexReplaceAll", err)
	}
	// The matches' indexes, two ints per group, at most one match per
	// byte of s and one more.
	if (c.NumSubexp()+1)*16*(len(s)+1) > maxBuilt {
		return "", fmt.Errorf("regexReplaceAll: %d groups over %d bytes are too many to match", c.NumSubexp(), len(s))
	}
	dollars := strings.Count(repl, "$")
	var out []byte
	last := 0
	for _, m := range c.FindAllStringSubmatchIndex(s, -1) {
		longest := 0
		for g := 0; g+1 < len(m); g += 2 {
			longest = max(longest, m[g+1]-m[g])
		}
		if err := fits("regexReplaceAll", len(out)+m[0]-last+len(repl)+dollars*longest); err != nil {
			return "", err
		}
		out = append(out, s[last:m[0]]...)
		out = c.ExpandString(out, repl, s, m)
		last = m[1]
	}
	out = append(out, s[last:]...)
	if err := fits("regexReplaceAll", len(out)); err != nil {
		return "", err
	}
	return string(out), nil
}

func regexMatch(re, s string) (bool, error) {
	c, err := regexp.Compile(re)
	if err != nil {
		return false, regexErr("regexMatch", err)
	}
	return c.MatchString(s), nil
}

// regexErr is what is wrong with a pattern ("missing closing )"), without
// the part of the pattern regexp quotes with it.
func regexErr(name string, err error) error {
	var se *syntax.Error
	if errors.As(err, &se) {
		return fmt.Errorf("%s: invalid regular expression: %s", name, se.Code)
	}
	return fmt.Errorf("%s: invalid regular expression", name)
}

// split trims s first, and splits "" into no elements.
func split(sep, s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return []string{}, nil
	}
	return strings.Split(s, sep), nil
}

// splitToMap splits "k1=v1,k2=v2" into a map, skipping parts without sep2.
func splitToMap(sep1, sep2, s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	m := map[string]string{}
	if s == "" {
		return m, nil
	}
	for _, part := range strings.Split(s, sep1) {
		if k, v, ok := strings.Cut(part, sep2); ok {
			m[k] = v
		}
	}
	return m, nil
}

func sha256Hex(s string) (string, error) {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:]), nil
}

func md5sum(s string) (string, error) {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:]), nil
}

func hmacSHA256Hex(message, key string) (string, error) {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(message))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// timestamp is the current UTC time: RFC 3339, "unix" seconds, or a Go
// layout.
func timestamp(layout ...string) (string, error) {
	switch len(layout) {
	case 0:
		return now().Format(time.RFC3339), nil
	case 1:
		if layout[0] == "unix" {
			return strconv.FormatInt(now().Unix(), 10), nil
		}
		return now().Format(layout[0]), nil
	}
	return "", fmt.Errorf("timestamp: wrong number of arguments, expected 0 or 1, but got %d", len(layout))
}

func toLower(s string) (string, error) { return strings.ToLower(s), nil }

func toUpper(s string) (string, error) { return strings.ToUpper(s), nil }

// toTitle upper-cases the first letter of each word and leaves the rest.
func toTitle(s string) (string, error) {
	return cases.Title(language.Und, cases.NoLower).String(s), nil
}

// toJSON escapes <, > and & like encoding/json (toUnescapedJSON does not).
func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", jsonErr("toJSON", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func toJSONPretty(v any) (string, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", jsonErr("toJSONPretty", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func toUnescapedJSON(v any) (string, error) {
	return unescapedJSON("toUnescapedJSON", v, "")
}

func toUnescapedJSONPretty(v any) (string, error) {
	return unescapedJSON("toUnescapedJSONPretty", v, "  ")
}

func unescapedJSON(name string, v any, indent string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v); err != nil {
		return "", jsonErr(name, err)
	}
	return strings.TrimRight(buf.String(), "\r\n"), nil
}

// jsonErr keeps encoding/json's error for a type it cannot encode, and
// replaces the one for a value (it prints the value: NaN, -Inf).
func jsonErr(name string, err error) error {
	var te *json.UnsupportedTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: %w", name, te)
	}
	return fmt.Errorf("%s: a value cannot be written as JSON (NaN and infinities cannot)", name)
}

func toYAML(v any) (string, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("toYAML: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func toTOML(v any) (string, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(v); err != nil {
		// The encoder's messages quote keys and numbers of the value.
		return "", errors.New("toTOML: the value cannot be written as TOML: it needs a map at the top, string keys, and no null in a list")
	}
	return string(bytes.TrimSpace(buf.Bytes())), nil
}
