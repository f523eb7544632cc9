package render

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTemplateErrorsNeverEchoSecrets: every template function that can
// fail, and every text/template error that prints a value, is run with an
// argument derived from a secret (upper-cased, split, base64-decoded, parsed
// as a number). The error must name where it happened and hold neither the
// secret nor any piece of it, as a whole-value redaction would miss them.
func TestTemplateErrorsNeverEchoSecrets(t *testing.T) {
	t.Parallel()
	self := &Secret{Data: map[string]any{
		"password": "Qv7zx-Kw9vb-J4ymt",
		"blob":     base64.StdEncoding.EncodeToString([]byte("Zebra7-Quokka3")),
		"pin":      "4815.1623",
		"ratio":    "-inf",
		"port":     json.Number("5432"),
		"list":     []any{"only-item"},
	}}
	kv := &Secret{Data: map[string]any{"data": map[string]any{"api_key": "k-9f8e7d", "list": []any{"item-secret"}}, "metadata": map[string]any{}}}
	lookup := func(string) (*Secret, error) { return kv, nil }
	fragments := []string{
		"Qv7zx-Kw9vb-J4ymt", "Qv7zx", "Kw9vb", "J4ymt",
		self.Data["blob"].(string), "Zebra7", "Quokka3",
		"4815", "1623", "-inf", "5432", "k-9f8e7d", "item-secret",
	}
	// mask hides every fragment so that a failure never prints one.
	mask := func(msg string) (string, bool) {
		found := false
		for i, f := range fragments {
			re := regexp.MustCompile(`(?i)` + regexp.QuoteMeta(f))
			if re.MatchString(msg) {
				found = true
				msg = re.ReplaceAllString(msg, fmt.Sprintf("<fragment %d>", i))
			}
		}
		return msg, found
	}
	const (
		upper = `(toUpper .Data.password)`
		piece = `(index (split "-" .Data.password) 1)`
		plain = `(base64Decode .Data.blob)`
		whole = `(index (split "." .Data.pin) 0)`
		frac  = `(index (split "." .Data.pin) 1)`
	)
	for _, tc := range []struct{ fn, text string }{
		{"parseInt", `{{ .Data.password | toUpper | parseInt }}`},
		{"parseInt", `{{ ` + piece + ` | parseInt }}`},
		{"parseInt", `{{ parseInt .Data.pin }}`},
		{"parseUint", `{{ parseUint ` + upper + ` }}`},
		{"parseFloat", `{{ parseFloat ` + piece + ` }}`},
		{"parseBool", `{{ parseBool ` + plain + ` }}`},
		{"regexMatch", `{{ regexMatch (printf "(%s" ` + upper + `) "x" }}`},
		{"regexReplaceAll", `{{ regexReplaceAll (printf "[%s" ` + plain + `) "" "x" }}`},
		{"base64Decode", `{{ base64Decode ` + upper + ` }}`},
		{"base64URLDecode", `{{ base64URLDecode (printf "%s!" .Data.password) }}`},
		{"mustEnv", `{{ mustEnv ` + upper + ` }}`},
		{"parseJSON", `{{ parseJSON (printf "[%s" ` + upper + `) }}`},
		{"parseYAML", `{{ parseYAML (printf "*%s" ` + piece + `) }}`},
		{"add", `{{ add ` + upper + ` 1 }}`},
		{"add", `{{ add .Data.port 1 }}`},
		{"subtract", `{{ subtract 1 ` + piece + ` }}`},
		{"multiply", `{{ multiply ` + plain + ` 2 }}`},
		{"divide", `{{ divide 2 ` + upper + ` }}`},
		{"modulo", `{{ modulo (parseFloat .Data.pin) 3 }}`},
		{"minimum", `{{ minimum ` + upper + ` 1 }}`},
		{"maximum", `{{ maximum 1 ` + upper + ` }}`},
		{"explodeMap", `{{ scratch.MapSet "m" ` + upper + ` 1 }}{{ scratch.MapSet "m" (printf "%s/x" ` + upper + `) 2 }}{{ scratch.Get "m" | explodeMap }}`},
		{"MapSet", `{{ scratch.Set ` + upper + ` 1 }}{{ scratch.MapSet ` + upper + ` "k" 1 }}`},
		{"toTOML", `{{ scratch.MapSet "t" ` + upper + ` (loop 1) }}{{ scratch.Get "t" | toTOML }}`},
		{"toJSON", `{{ parseFloat (toUpper .Data.ratio) | toJSON }}`},
		{"toUnescapedJSON", `{{ parseFloat (toUpper .Data.ratio) | toUnescapedJSON }}`},
		{"loop", `{{ range loop ` + upper + ` }}{{ end }}`},
		{"index", `{{ index .Data.list (parseInt ` + whole + `) }}`},
		{"slice", `{{ slice .Data.list 0 (parseInt ` + frac + `) }}`},
		{"eq", `{{ eq (split "-" .Data.password) (split "-" .Data.password) }}`},
		{"range", `{{ range ` + upper + ` }}{{ end }}`},
		{"range", `{{ range $a, $b := parseInt ` + frac + ` }}{{ end }}`},
		{"executeTemplate", `{{ define "d" }}{{ range . }}{{ end }}{{ end }}{{ executeTemplate "d" ` + upper + ` }}`},
		{"parseBool", `{{ with secret "secret/data/app" }}{{ parseBool .Data.data.api_key }}{{ end }}`},
		{"parseFloat", `{{ with secret "secret/data/app" }}{{ index .Data.data.list 0 | toUpper | parseFloat }}{{ end }}`},
	} {
		tmpl, err := ParseTemplate("app.tmpl", tc.text)
		if err != nil {
			t.Fatalf("%s: %v", tc.text, err)
		}
		_, err = tmpl.Execute(self, lookup, nil)
		if err == nil {
			t.Errorf("%s: no error", tc.text)
			continue
		}
		msg, leaked := mask(err.Error())
		if leaked {
			t.Errorf("%s: the error holds a piece of a secret: %s", tc.text, msg)
		}
		if !strings.Contains(msg, "app.tmpl:1:") || !strings.Contains(msg, tc.fn) {
			t.Errorf("%s: error %q does not say where it happened (app.tmpl:1:...) and in what (%s)", tc.text, msg, tc.fn)
		}
	}
}

func TestTemplateSecretFields(t *testing.T) {
	t.Parallel()
	s := &Secret{Data: map[string]any{"k": "v"}, LeaseID: "kv/x/1", LeaseDuration: 2764800, Renewable: false, Warnings: []string{"w1", "w2"}}
	tmpl, err := ParseTemplate("t", `{{ with secret "kv/x" }}{{ .LeaseID }} {{ .LeaseDuration }} {{ .Renewable }} {{ range .Warnings }}[{{ . }}]{{ end }} {{ .Data.k }}{{ end }}`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tmpl.Execute(&Secret{}, func(p string) (*Secret, error) {
		if p != "kv/x" {
			return nil, errors.New("wrong path " + p)
		}
		return s, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "kv/x/1 2764800 false [w1][w2] v"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestTemplateSecretsList(t *testing.T) {
	t.Parallel()
	var asked []string
	list := func(p string) ([]string, error) {
		asked = append(asked, p)
		return []string{"a", "b/", "c"}, nil
	}
	tmpl, err := ParseTemplate("t", `{{ range secrets "/secret/apps/" }}{{ . }},{{ end }}|{{ secrets "" | len }}`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tmpl.Execute(&Secret{}, nil, list)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "a,b/,c,|0" || len(asked) != 1 || asked[0] != "secret/apps" {
		t.Errorf("got %q, listed %q", out, asked)
	}
	if _, err := tmpl.Execute(&Secret{}, nil, nil); err == nil {
		t.Error("secrets without a lister: no error")
	}
}

// TestLoopLeavesNothingRunning: a range over loop that stops early (break,
// or an error) must not leave the goroutine feeding it: vault-renew renders
// for the pod's whole life.
func TestLoopLeavesNothingRunning(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, text := range []string{
		`{{ range $i := loop 1000000 }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ end }}`,
		`{{ range $i := loop 1000000 }}{{ if eq $i 3 }}{{ parseInt "x" }}{{ end }}{{ end }}`,
	} {
		tmpl, err := ParseTemplate("t", text)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			_, _ = tmpl.Execute(&Secret{}, nil, nil)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines left running after the renders (%d before)", n, before)
	}
}

func TestEnvNeverGivesTheToken(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "hvs.not-for-files")
	for _, text := range []string{`{{ env "VAULT_TOKEN" }}`, `{{ mustEnv "VAULT_TOKEN" }}`, `{{ envOrDefault "VAULT_TOKEN" "x" }}`} {
		tmpl, err := ParseTemplate("t", text)
		if err != nil {
			t.Fatal(err)
		}
		out, err := tmpl.Execute(&Secret{}, nil, nil)
		if err == nil || strings.Contains(string(out), "hvs.") || strings.Contains(err.Error(), "hvs.") {
			t.Errorf("%s: got %q, %v", text, out, err)
		}
	}
}

func TestTemplatePaths(t *testing.T) {
	t.Parallel()
	tmpl, err := ParseTemplate("t", `{{ with secret "/b/x/" }}{{ end }}{{ define "d" }}{{ (secret "a/y").Data }}{{ end }}{{ with secret (printf "c/%s" "z") }}{{ end }}{{ secret "b/x" }}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tmpl.Paths(), ","); got != "a/y,b/x" {
		t.Errorf("Paths() = %q, want the literal paths a/y,b/x", got)
	}
}

func TestTimestamp(t *testing.T) {
	orig := now
	t.Cleanup(func() { now = orig })
	now = func() time.Time { return time.Date(2026, 12, 1, 14, 5, 6, 0, time.UTC) }
	tmpl, err := ParseTemplate("t", `{{ timestamp }}|{{ timestamp "unix" }}|{{ timestamp "2006-01-02" }}`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tmpl.Execute(&Secret{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "2026-12-01T14:05:06Z|1796133906|2026-12-01"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}
