package render

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func addSeeds(f *testing.F) {
	f.Add("username", "v-web-1", "password", "A1a-9ZmQ2pLrT0k")
	f.Add("password", "x\nINJECTED=1", "user", `"; $(id) `+"`id`")
	f.Add("a=b", "c=d", "x\ny", "\r\n")
	f.Add("", "", "_", "")
	f.Add("user", "1", "USER", "2")
	f.Add("ключ", "значение 🔑", "yes", "null")
	f.Add("k", "\x7f\u0085\u2028\ufeff\uffff", "k2", "\x00\x1b")
	f.Add("bad\xffkey", "bad\xfe\xffvalue", "k", `\`)
}

// asRunes is s with every invalid UTF-8 byte replaced by U+FFFD, the way
// a rune-by-rune reader (and JSON) sees it.
func asRunes(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}

// FuzzEnvFormat: whatever the keys and values, the env output is one
// strictly quoted NAME="value" line per field, or an error because two
// fields become the same variable; the values read back unchanged.
func FuzzEnvFormat(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		data := map[string]any{k1: v1, k2: v2}
		out, err := Format(Env, data)
		if err != nil {
			if (k1 == k2 || envKey(k1) != envKey(k2)) && !refusedEnvName(envKey(k1)) && !refusedEnvName(envKey(k2)) {
				t.Fatalf("error %v for fields %q and %q that neither collide nor name a refused variable", err, k1, k2)
			}
			return
		}
		vars, err := parseEnv(out)
		if err != nil {
			t.Fatalf("%v\noutput: %q", err, out)
		}
		if len(vars) != len(data) {
			t.Fatalf("%d variables for %d fields: %q", len(vars), len(data), out)
		}
		for k, v := range data {
			if got := vars[envKey(k)]; got != asRunes(v.(string)) {
				t.Fatalf("field %q: read back %q, want %q", k, got, v)
			}
		}
	})
}

// FuzzYAMLFormat: whatever the keys and values, the yaml output is one
// `KEY: VALUE` line per field that a strict reader accepts, and reads back
// as the data.
func FuzzYAMLFormat(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		if !utf8.ValidString(k1) || !utf8.ValidString(k2) {
			// Keys decoded from Vault's JSON are always UTF-8; two
			// invalid ones could both become "\ufffd".
			t.Skip()
		}
		data := map[string]any{k1: v1, k2: []any{v2, map[string]any{k1: v1}}}
		out, err := Format(YAML, data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseYAML(out)
		if err != nil {
			t.Fatalf("%v\noutput: %q", err, out)
		}
		if want := normalize(t, data); !reflect.DeepEqual(any(got), want) {
			t.Fatalf("read back %#v, want %#v", got, want)
		}
	})
}
