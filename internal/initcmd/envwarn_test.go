package initcmd

import (
	"strings"
	"testing"
)

// TestRunWarnsOfEnvFieldsDotenvReadsDifferently: an env-format field that
// cannot be written so that every dotenv reader reads it as it is gets a
// warning naming the field, never its value; a field that can (single
// quotes keep $ and \ literal) gets none.
func TestRunWarnsOfEnvFieldsDotenvReadsDifferently(t *testing.T) {
	t.Parallel()
	const (
		odd   = `it's \"the-odd-one-never-logged\"`
		plain = `the-$plain\\one-never-logged`
	)
	f := &fakeVault{answers: map[string]answer{
		"secret/data/odd": {200, `{"data":{"data":{"odd":"` + odd + `","plain":"` + plain + `"},"metadata":{"version":1}}}`},
	}}
	addr := f.start(t)
	d := newDirs(t)
	r := runInit(t, append(d.flags(), "--role", "web", "--jwt-file", jwtFile, "--secret", "kv=secret/data/odd", "--format", "kv=env", "--timeout", "20s"),
		map[string]string{"VAULT_ADDR": addr})
	if r.code != 0 {
		t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
	}
	var warning string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "dotenv") {
			warning = l
		}
	}
	for _, want := range []string{"secret=kv", "fields=odd", "python-dotenv", "--format json"} {
		if !strings.Contains(warning, want) {
			t.Errorf("the dotenv warning %q does not contain %q", warning, want)
		}
	}
	if strings.Contains(warning, "plain") {
		t.Errorf("the dotenv warning names a field every reader gets right: %q", warning)
	}
	if strings.Contains(r.stderr, "never-logged") {
		t.Error("stderr shows a value")
	}
	if got, want := readFile(t, d.secrets+"/kv"), `ODD="it's \"the-odd-one-never-logged\""`+"\n"+`PLAIN='the-$plain\one-never-logged'`+"\n"; got != want {
		t.Errorf("env file differs from the two lines expected")
	}
}
