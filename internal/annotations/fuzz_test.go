package annotations

import (
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, and every value the kubelet can write
// (any string, quoted with %q) comes back as it was.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a", "{{ with secret \"x\" }}\n{{ end }}", "\x00\xff\"\\", "é\u2028"} {
		f.Add("podlease.io/template-db", s)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		_, _ = Parse(key + "=" + value)
		if key == "" || key == "z/last" || strings.ContainsAny(key, "= \t\"\n\r") {
			return // not an annotation key
		}
		text := kubeletFormat(map[string]string{key: value, "z/last": "x"})
		got, err := Parse(text)
		if err != nil {
			t.Fatalf("Parse(%q): %v", text, err)
		}
		if got[key] != value || len(got) != 2 {
			t.Fatalf("Parse(%q) = %q, want %q for %q", text, got, value, key)
		}
	})
}
