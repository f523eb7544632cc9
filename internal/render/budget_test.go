package render

import (
	"runtime"
	"slices"
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
	renderTime = 3 * time.Second // time enough for the size bounds to come first, also under -race
	list := make([]any, 100000)
	for i := range list {
		list[i] = i
	}
	self := &Secret{Data: map[string]any{"n": "3000000000", "big": "5000000000", "s": strings.Repeat("ab", 5000),
		"m": strings.Repeat("m", 600<<10), "t": strings.Repeat("t", 300<<10), "list": list}}
	doubling := `{{ $s := "ab" }}{{ range loop 40 }}{{ $s = print $s $s }}{{ end }}`
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
		{"a loop inside a defined template", `{{ define "a" }}{{ range loop 100000000000 }}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{{ end }}{{ end }}{{ executeTemplate "a" }}`, "executeTemplate: the result would be longer|took longer than"},
		{"indent by a large count", `{{ indent 4000000000 "a" }}`, "indent: the result would be longer"},
		{"indent of many lines", `{{ indent 1000 (replaceAll "a" "\n" .Data.s) }}`, "indent: the result would be longer"},
		{"replaceAll that doubles and doubles", nested, "replaceAll: the result would be longer"},
		{"regexReplaceAll that copies the input", `{{ regexReplaceAll "(.*)" "$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1" (replaceAll "a" "b" .Data.s) }}`, "regexReplaceAll: the result would be longer"},
		{"printf with a huge width", `{{ printf "%0999999999d" 1 }}`, "printf: the result would be longer"},
		{"printf with a width from an argument", `{{ printf "%*d" (parseInt .Data.big) 1 }}`, "printf: a width or precision taken from an argument"},
		{"printf with a huge precision", `{{ printf "%.999999999f" 1.5 }}`, "printf: the result would be longer"},
		{"printf with many wide verbs", `{{ printf "` + strings.Repeat("%1000000[1]d", 100) + `" 1 }}`, "printf: the result would be longer"},
		{"printf with an indexed star", `{{ printf "%.[2]*[1]d" 1 5 }}`, "taken from an argument"},
		{"print doubling a string", doubling, "print: the result would be longer"},
		{"js of js of js", `{{ $s := .Data.s }}{{ range loop 40 }}{{ $s = js $s $s }}{{ end }}`, "js: the result would be longer"},
		{"scratch filled with built strings", `{{ range loop 200 }}{{ scratch.MapSet "a" (print .) (printf "%01000000d" 0) }}{{ end }}`, "built more than 16777216 bytes"},
		{"a scratch map inside itself", `{{ scratch.MapSet "a" "x" 1 }}{{ scratch.MapSet "a" "self" (scratch.Get "a") }}{{ scratch.Get "a" }}`, "holds the map it would be stored in"},
		{"regexReplaceAll with many groups", `{{ regexReplaceAll "` + strings.Repeat("()", 200) + `" "" .Data.t }}`, "too many to match"},
		{"a range over data that calls nothing", `{{ range $a := .Data.list }}{{ range $b := $.Data.list }}{{ end }}{{ end }}`, "took longer than"},
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
		if err == nil || !slices.ContainsFunc(strings.Split(tc.wantErr, "|"), func(w string) bool { return strings.Contains(err.Error(), w) }) {
			t.Errorf("%s: %d bytes, error %v; want an error with %q", tc.name, len(out), err, tc.wantErr)
		}
		if took > renderTime+2*time.Second {
			t.Errorf("%s: failed after %s; want within the render's %s", tc.name, took, renderTime)
		}
		// What a render stopped by the clock allocates is garbage made
		// over its time (and an abandoned one runs on): not counted.
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 && !strings.Contains(tc.wantErr, "took longer") {
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
		{`{{ define "a" }}{{ $.Data.m }}{{ end }}{{ len (executeTemplate "a" .) }}`, "614400"},
		{`{{ len (regexReplaceAll "^(t+)$" "${1}${1}${1}" .Data.t) }}`, "921600"},
		{`{{ printf "%s" (print 1 2) }}{{ println "x" }}{{ html "<" }}{{ js "'" }}{{ urlquery "a b" }}`, "1 2x\n&lt;\\'a+b"},
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

// TestRenderDoesNotCountVaultsTime: time a {{ secret }} spends waiting for
// Vault does not count against the render's.
func TestRenderDoesNotCountVaultsTime(t *testing.T) {
	// Not parallel: it shortens renderTime for the package.
	defer func(d time.Duration) { renderTime = d }(renderTime)
	renderTime = 300 * time.Millisecond
	tmpl, err := ParseTemplate("slow-lookup", `{{ with secret "kv/a" }}{{ .Data.x }}{{ end }}`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tmpl.Execute(&Secret{}, func(string) (*Secret, error) {
		time.Sleep(600 * time.Millisecond) // a failover, say
		return &Secret{Data: map[string]any{"x": "ok"}}, nil
	}, nil)
	if err != nil || string(out) != "ok" {
		t.Errorf("%q, %v; want ok", out, err)
	}
}
