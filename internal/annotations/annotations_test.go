package annotations

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// kubeletFormat renders m the way the kubelet writes a downward API
// metadata.annotations file (pkg/fieldpath's FormatMap): sorted key="value"
// lines, each value %q-quoted, no newline after the last.
func kubeletFormat(m map[string]string) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestParseRoundTrip(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]string{
		"empty":                  {},
		"plain":                  {"podlease.io/role": "app", "vault.hashicorp.com/agent-inject-secret-db": "database/creds/app"},
		"multi-line template":    {"vault.hashicorp.com/agent-inject-template-db": "{{- with secret \"database/creds/app\" -}}\npostgres://{{ .Data.username }}:{{ .Data.password }}@db/app\n{{- end }}\n"},
		"quotes and backslashes": {"a/b": `say "hi" \ and \n literally`},
		"equals sign in value":   {"k": "a=b=c", "k2": "="},
		"unicode":                {"example.com/note": "héllo wörld ✓ \u00a0"},
		"control characters":     {"k": "tab\there\r\nbell\a nul\x00 del\x7f"},
		"invalid utf-8":          {"k": "\xff\xfe"},
		"empty value":            {"k": ""},
		"kubectl annotations":    {"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"v1","kind":"Pod"}` + "\n"},
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(kubeletFormat(want))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Parse = %q, want %q", got, want)
			}
		})
	}
}

func TestParseKubeletFile(t *testing.T) {
	t.Parallel()
	// Written as the kubelet writes it, byte for byte.
	got, err := Parse(`podlease.io/role="app"` + "\n" + `podlease.io/template-db="{{ with secret \"db\" }}\n{{ .Data.username }}\n{{ end }}"`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"podlease.io/role": "app", "podlease.io/template-db": "{{ with secret \"db\" }}\n{{ .Data.username }}\n{{ end }}"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ text, want string }{
		"no equals":        {"podlease.io/role", "line 1: want key=\"value\""},
		"no key":           {`="x"`, "line 1: want key"},
		"unquoted":         {"podlease.io/role=app", `line 1 (podlease.io/role): want the value in double quotes`},
		"unterminated":     {`k="abc`, "line 1 (k): the value is not one complete Go quoted string"},
		"trailing garbage": {`k="abc" x`, "not one complete Go quoted string"},
		"raw newline":      {"k=\"a\nb\"", "line 1 (k)"},
		"bad escape":       {`k="\q"`, "line 1 (k)"},
		"single quotes":    {`k='a'`, "want the value in double quotes"},
		"duplicate":        {"k=\"a\"\nk=\"b\"", "line 2: k is given twice"},
		"space in key":     {`a b="c"`, "is not an annotation key"},
		"second line bad":  {"a=\"1\"\nb=2", "line 2 (b)"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want an error containing %q", tc.text, err, tc.want)
			}
		})
	}
}

func TestParseSkipsBlankLines(t *testing.T) {
	t.Parallel()
	got, err := Parse("\na=\"1\"\r\n\nb=\"2\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"a": "1", "b": "2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	// The kubelet's layout: the file is a symlink into ..data.
	data := filepath.Join(dir, "..2026_12_01")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "annotations"), []byte(`podlease.io/role="app"`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/annotations", filepath.Join(dir, "annotations")); err != nil {
		t.Fatal(err)
	}
	got, err := Read(filepath.Join(dir, "annotations"))
	if err != nil || got["podlease.io/role"] != "app" {
		t.Fatalf("Read = %q, %v", got, err)
	}

	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(`k="`+strings.Repeat("x", MaxSize)+`"`), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("k=v"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ path, want string }{
		"missing":   {filepath.Join(dir, "nope"), "no such file"},
		"directory": {dir, "is not a regular file"},
		"fifo":      {fifo, "is not a regular file"},
		"too large": {big, "larger than"},
		"malformed": {bad, bad + ": line 1 (k)"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Read(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read(%s) = %v, want an error containing %q", tc.path, err, tc.want)
			}
		})
	}
}
