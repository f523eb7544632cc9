package render

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

// TestConsulTemplateGolden renders every template of
// testdata/consul-template-v0.41.1.jsonl (one JSON object a line: the
// template text, and what consul-template v0.41.1, the version Vault 1.21
// builds in, rendered from it with no secrets: "out", or "err": true) and
// requires the same bytes, or an error where consul-template failed. The
// expected values were produced by consul-template's own template package
// with CTDIFF_X=xval and CTDIFF_EMPTY= in the environment. Adding a case is
// adding a line produced the same way.
func TestConsulTemplateGolden(t *testing.T) {
	t.Setenv("CTDIFF_X", "xval")
	t.Setenv("CTDIFF_EMPTY", "")
	os.Unsetenv("CTDIFF_UNSET")
	f, err := os.Open("testdata/consul-template-v0.41.1.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		var c struct {
			Text string
			Out  *string
			Err  bool
		}
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		tmpl, err := ParseTemplate("t", c.Text)
		var out []byte
		if err == nil {
			out, err = tmpl.Execute(nil, nil, nil)
		}
		switch {
		case c.Err && err == nil:
			t.Errorf("line %d: %s\nrendered %q, consul-template fails", n, c.Text, out)
		case !c.Err && err != nil:
			t.Errorf("line %d: %s\nerror %v, consul-template renders %q", n, c.Text, err, *c.Out)
		case !c.Err && string(out) != *c.Out:
			t.Errorf("line %d: %s\ngot  %q\nwant %q", n, c.Text, out, *c.Out)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 50 {
		t.Fatalf("only %d cases", n)
	}
}
