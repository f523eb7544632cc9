package render

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTemplateErrorsRedactSecrets: a function that quotes its argument in
// an error (parseInt, add, explodeMap...) never carries a secret value
// into the message, from the template's own secret or one it looked up.
func TestTemplateErrorsRedactSecrets(t *testing.T) {
	t.Parallel()
	self := &Secret{Data: map[string]any{"password": `s3cr3t"pw`, "port": json.Number("5432")}}
	kv := &Secret{Data: map[string]any{"data": map[string]any{"api_key": "k-9f8e7d", "list": []any{"item-secret"}}, "metadata": map[string]any{}}}
	lookup := func(string) (*Secret, error) { return kv, nil }
	for _, text := range []string{
		`{{ parseInt .Data.password }}`,
		`{{ add .Data.password 1 }}`,
		`{{ add .Data.port 1 }}`,
		`{{ with secret "secret/data/app" }}{{ parseBool .Data.data.api_key }}{{ end }}`,
		`{{ with secret "secret/data/app" }}{{ index .Data.data.list 0 | parseFloat }}{{ end }}`,
		`{{ printf "%s" .Data.password | parseUint }}`,
	} {
		tmpl, err := ParseTemplate("t", text)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tmpl.Execute(self, lookup, nil)
		if err == nil {
			t.Fatalf("%s: no error", text)
		}
		for _, v := range []string{"s3cr3t", "5432", "k-9f8e7d", "item-secret"} {
			if strings.Contains(err.Error(), v) {
				t.Errorf("%s: error quotes a secret value: %v", text, err)
			}
		}
		if !strings.Contains(err.Error(), "[redacted]") {
			t.Errorf("%s: error %q does not show where the value was", text, err)
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
