package render

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzTemplateData renders hostile secret data (quotes, newlines, '=',
// shell metacharacters, invalid UTF-8) through consul-template style
// templates: rendering never fails or panics, a raw field comes out
// byte for byte, toJSON and base64 round-trip, and a value can never add
// a line of its own to a toJSON-quoted KEY=value file.
func FuzzTemplateData(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		if !utf8.ValidString(k1) || !utf8.ValidString(k2) || k1 == k2 {
			// Keys decoded from Vault's JSON are valid UTF-8 and unique.
			t.Skip()
		}
		self := &Secret{Data: map[string]any{k1: v1, k2: v2, "password": v1}}
		kv := &Secret{Data: map[string]any{"data": map[string]any{k2: v2}, "metadata": map[string]any{}}}
		lookup := func(string) (*Secret, error) { return kv, nil }
		render := func(text string) string {
			t.Helper()
			tmpl, err := ParseTemplate("t", text)
			if err != nil {
				t.Fatalf("parse %q: %v", text, err)
			}
			out, err := tmpl.Execute(self, lookup, nil)
			if err != nil {
				t.Fatalf("%q: %v", text, err)
			}
			return string(out)
		}
		if got := render(`PASSWORD={{ .Data.password }}`); got != "PASSWORD="+v1 {
			t.Fatalf("raw field: got %q, want %q", got, "PASSWORD="+v1)
		}
		var back string
		if err := json.Unmarshal([]byte(render(`{{ .Data.password | toJSON }}`)), &back); err != nil || back != asRunes(v1) {
			t.Fatalf("toJSON round trip of %q: %q, %v", v1, back, err)
		}
		if got := render(`{{ .Data.password | base64Encode | base64Decode }}`); got != v1 {
			t.Fatalf("base64 round trip of %q: %q", v1, got)
		}
		env := render(`{{ range $k, $v := .Data }}{{ $k | toJSON }}={{ $v | toJSON }}` + "\n" + `{{ end }}`)
		if n := strings.Count(env, "\n"); n != len(self.Data) {
			t.Fatalf("%d lines for %d fields: a value or key added a line:\n%q", n, len(self.Data), env)
		}
		var kvBack string
		if err := json.Unmarshal([]byte(render(`{{ with secret "secret/data/app" }}{{ index .Data.data `+jsonString(k2)+` | toJSON }}{{ end }}`)), &kvBack); err != nil || kvBack != asRunes(v2) {
			t.Fatalf("secret lookup round trip of %q: %q, %v", v2, kvBack, err)
		}
	})
}

// jsonString quotes s as a template string literal (Go syntax, which JSON
// quoting of valid UTF-8 satisfies).
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// FuzzParseTemplate: any --template text is parsed or refused with an
// error, never a panic, and an accepted one renders without panicking on
// ordinary data.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{
		`{{ .Data.username }}`,
		`{{ with secret "secret/data/app" }}{{ .Data.data.api_key }}{{ end }}`,
		`{{ (secret "database/creds/app").Data.username }}`,
		`{{ .Data.password | toJSON | base64Encode }}`,
		`{{ secret "a" "b=c" }}`,
		`{{`, `}}`, `{{ .Data.`, `{{ end }}`, `{{ template "x" }}`,
		`{{ define "a" }}{{ template "a" }}{{ end }}{{ template "a" }}`,
		`{{ .Data.missing }}`, `{{ printf "%s" .Data }}`, "{{/* comment */}}", "\x00{{ .LeaseID }}\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		tmpl, err := ParseTemplate("t", text)
		if err != nil {
			return
		}
		if strings.Contains(text, "range") || strings.Contains(text, "template") {
			// A template may loop or recurse as long as its author asks
			// (templates are configuration, not input): only parsing is
			// checked for those.
			return
		}
		self := &Secret{Data: map[string]any{"username": "u", "password": "p", "data": map[string]any{"api_key": "k"}}}
		_, _ = tmpl.Execute(self, func(string) (*Secret, error) { return self, nil }, nil)
	})
}
