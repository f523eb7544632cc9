package render

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestTemplate(t *testing.T) {
	t.Parallel()
	db := &Secret{
		Data:          map[string]any{"username": "v-web-1", "password": `p@ss"word`},
		LeaseID:       "database/creds/app/abc",
		LeaseDuration: 3600,
		Renewable:     true,
	}
	kv := &Secret{Data: map[string]any{
		"data":     map[string]any{"api_key": "k-123", "url": "https://api.example.com"},
		"metadata": map[string]any{"version": json.Number("3")},
	}}
	lookup := func(path string) (*Secret, error) {
		switch path {
		case "secret/data/app":
			return kv, nil
		case "database/creds/app":
			return db, nil
		}
		return nil, errors.New(path + " is not a path given with --secret")
	}
	for _, tc := range []struct {
		name, text string
		want       string // exact output
		wantErr    string // substring of the error
	}{
		{name: "data field", text: `user={{ .Data.username }}`, want: "user=v-web-1"},
		{name: "lease fields", text: `{{ .LeaseID }} {{ .LeaseDuration }} {{ .Renewable }}`, want: "database/creds/app/abc 3600 true"},
		{name: "with secret", text: `{{ with secret "secret/data/app" }}{{ .Data.data.api_key }}@{{ .Data.data.url }} v{{ .Data.metadata.version }}{{ end }}`, want: "k-123@https://api.example.com v3"},
		{name: "secret as a value", text: `{{ (secret "database/creds/app").Data.username }}`, want: "v-web-1"},
		{name: "connection string", text: `postgresql://{{ .Data.username }}:{{ .Data.password | urlquery }}@db:5432/app`, want: "postgresql://v-web-1:p%40ss%22word@db:5432/app"},
		{name: "toJSON", text: `{{ .Data | toJSON }}`, want: `{"password":"p@ss\"word","username":"v-web-1"}`},
		{name: "toJSONPretty", text: `{{ toJSONPretty .Data }}`, want: "{\n  \"password\": \"p@ss\\\"word\",\n  \"username\": \"v-web-1\"\n}"},
		{name: "toUpper toLower", text: `{{ toUpper .Data.username }} {{ toLower "ABC" }}`, want: "V-WEB-1 abc"},
		{name: "trimSpace", text: `[{{ trimSpace "  x \n" }}]`, want: "[x]"},
		{name: "base64", text: `{{ base64Encode .Data.username }} {{ base64Decode "di13ZWItMQ==" }}`, want: "di13ZWItMQ== v-web-1"},
		{name: "missing key", text: `{{ .Data.nope }}`, wantErr: `"nope"`},
		{name: "missing key in secret", text: `{{ with secret "secret/data/app" }}{{ .Data.data.nope }}{{ end }}`, wantErr: `"nope"`},
		{name: "unknown path", text: `{{ with secret "secret/data/other" }}{{ end }}`, wantErr: "secret/data/other is not a path given with --secret"},
		{name: "bad base64", text: `{{ base64Decode "%%%" }}`, wantErr: "base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmpl, err := ParseTemplate("app.tmpl", tc.text)
			if err != nil {
				t.Fatalf("ParseTemplate: %v", err)
			}
			out, err := tmpl.Execute(db, lookup, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q (output %q)", err, tc.wantErr, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("got %q, want %q", out, tc.want)
			}
		})
	}
}

func TestTemplateSecretWithoutLookup(t *testing.T) {
	t.Parallel()
	tmpl, err := ParseTemplate("t", `{{ with secret "a/b" }}{{ end }}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmpl.Execute(&Secret{}, nil, nil); err == nil || !strings.Contains(err.Error(), `"a/b"`) {
		t.Errorf("error = %v, want one naming the path", err)
	}
}

func TestParseTemplateErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, text string }{
		{"unclosed action", `{{ .Data.x `},
		{"unclosed with", `{{ with secret "a" }}`},
		{"unknown function", `{{ vault "a" }}`},
		{"stray end", `{{ end }}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseTemplate("/etc/podlease/app.tmpl", tc.text)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "/etc/podlease/app.tmpl") {
				t.Errorf("error %q does not name the template", err)
			}
		})
	}
}

// TestErrorLocationSurvivesRedaction: a value of one character (a KV v2
// version "1") is redacted from an error, but never from the template's
// location and action, which are the template's own text.
func TestErrorLocationSurvivesRedaction(t *testing.T) {
	t.Parallel()
	kv := &Secret{Data: map[string]any{
		"data":     map[string]any{"api_key": "k-1"},
		"metadata": map[string]any{"version": json.Number("1")},
	}}
	tmpl, err := ParseTemplate("typo.tmpl", "line one\n     {{ .Data.data.nope }}\n")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmpl.Execute(kv, nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "typo.tmpl:2:13: at <.Data.data.nope>: ") {
		t.Errorf("error %v; want it to start with typo.tmpl:2:13: at <.Data.data.nope>", err)
	}
	if err != nil && strings.Contains(err.Error(), "k-1") {
		t.Errorf("the error holds a value: %v", err)
	}
}
