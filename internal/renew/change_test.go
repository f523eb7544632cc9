package renew

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"testing/synctest"
	"time"
)

func TestTemplateIsRenderedAgainOnRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newFakeVault()
		v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second
		v.kv["secret/data/app"] = map[string]any{"host": "db.example"}
		tmpl := `postgres://{{ .Data.username }}:{{ .Data.password }}@{{ with secret "secret/data/app" }}{{ .Data.data.host }}{{ end }}/app` + "\n"
		f := newFixture(t, v, spec{name: "app", path: "secret/data/app", format: "json"}, spec{name: "dsn", path: "database/creds/app", template: tmpl})
		before, _ := os.ReadFile(filepath.Join(f.secretsDir, "dsn"))
		f.start()
		time.Sleep(17 * time.Second) // the capped renewal at 15s, and the rotation
		b, err := os.ReadFile(filepath.Join(f.secretsDir, "dsn"))
		if err != nil {
			t.Fatal(err)
		}
		st := f.state()
		if st.Secrets[1].Template != tmpl || st.Secrets[1].Format != "" {
			t.Errorf("state.json lost the template: %+v", st.Secrets[1])
		}
		m := regexp.MustCompile(`^postgres://(v-app-\d+):pw-\d+-topsecret@db.example/app\n$`).FindSubmatch(b)
		if m == nil || bytes.Contains(before, m[1]) {
			t.Errorf("dsn file after rotation = %q (before: %q); want the template rendered with a new credential", b, before)
		}
		f.stop()
	})
}
