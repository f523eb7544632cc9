package render

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRenderIsBounded: templates that run away, by their own mistake or
// steered by data from Vault, fail with an error naming the bound, within
// a bounded time and memory, and leave nothing running.
func TestRenderIsBounded(t *testing.T) {
	// Not parallel: it shortens renderTime for the package.
	defer func(d time.Duration) { renderTime = d }(renderTime)
	renderTime = 300 * time.Millisecond
	self := &Secret{Data: map[string]any{"n": "3000000000", "big": "5000000000", "s": strings.Repeat("ab", 5000)}}
	nested := `{{ $s := "0123456789" }}`
	for range 9 {
		nested += `{{ $s = replaceAll "" "0123456789" $s }}`
	}
	for _, tc := range []struct {
		name, text, wantErr string
	}{
		{"a define that calls itself", `{{ define "a" }}{{ executeTemplate "a" }}{{ end }}{{ executeTemplate "a" }}`, "nested more than 100 deep"},
		{"a loop that writes without end", `{{ range loop 100000000000 }}xxxxxxxxxx{{ end }}`, "more than 1048576 bytes"},
		{"a loop over a count from Vault", `{{ range loop (parseInt .Data.n) }}{{ end }}`, "took longer than"},
		{"nested loops", `{{ range loop 100000 }}{{ range loop 100000 }}{{ end }}{{ end }}`, "took longer than"},
		{"a loop inside a defined template", `{{ define "a" }}{{ range loop 100000000000 }}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{{ end }}{{ end }}{{ executeTemplate "a" }}`, "more than 1048576 bytes"},
		{"indent by a large count", `{{ indent 4000000000 "a" }}`, "indent: the result would be longer"},
		{"indent of many lines", `{{ indent 1000 (replaceAll "a" "\n" .Data.s) }}`, "indent: the result would be longer"},
		{"replaceAll that doubles and doubles", nested, "replaceAll: the result would be longer"},
		{"regexReplaceAll that copies the input", `{{ regexReplaceAll "(.*)" "$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1" (replaceAll "a" "b" .Data.s) }}`, "regexReplaceAll: the result would be longer"},
		{"printf with a huge width", `{{ printf "%0999999999d" 1 }}`, "printf: the result would be longer"},
		{"printf with a width from an argument", `{{ printf "%*d" (parseInt .Data.big) 1 }}`, "printf: a width or precision taken from an argument"},
		{"printf with a huge precision", `{{ printf "%.999999999f" 1.5 }}`, "printf: the result would be longer"},
	} {
		tmpl, err := ParseTemplate(tc.name, tc.text)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		out, err := tmpl.Execute(self, nil, nil)
		took := time.Since(start)
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: %d bytes, error %v; want an error with %q", tc.name, len(out), err, tc.wantErr)
		}
		if took > renderTime+2*time.Second {
			t.Errorf("%s: failed after %s; want within the render's %s", tc.name, took, renderTime)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
			t.Errorf("%s: allocated %d MiB", tc.name, grew>>20)
		}
	}
	// Within the bounds, the same functions work.
	for _, tc := range []struct{ text, want string }{
		{`{{ define "a" }}[{{ . }}]{{ end }}{{ executeTemplate "a" "x" }}{{ executeTemplate "a" "y" }}`, "[x][y]"},
		{`{{ range loop 3 }}{{ . }}{{ end }}`, "012"},
		{`{{ indent 2 "a\nb\n" }}`, "  a\n  b\n"},
		{`{{ replaceAll "a" "xy" "banana" }}`, "bxynxynxy"},
		{`{{ regexReplaceAll "(a)(n)" "$2$1" "banana" }}`, "bnanaa"},
		{`{{ printf "%05.1f|%-3s|%[1]v|%%" 3.14159 "ab" }}`, "003.1|ab |3.14159|%"},
		{`{{ join "," (split "-" "a-b-c") }}`, "a,b,c"},
	} {
		tmpl, err := ParseTemplate("ok", tc.text)
		if err != nil {
			t.Fatal(err)
		}
		out, err := tmpl.Execute(self, nil, nil)
		if err != nil || string(out) != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.text, out, err, tc.want)
		}
	}
}
