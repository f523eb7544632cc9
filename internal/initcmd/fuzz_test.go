package initcmd

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/podlease/podlease/internal/render"
)

// FuzzParseSecretFlag feeds one --secret and one --format value through
// Config.Validate: it never panics, every error names the flag, and an
// accepted name is a plain file name inside --secrets-dir.
func FuzzParseSecretFlag(f *testing.F) {
	for _, seed := range [][2]string{
		{"db=database/creds/app", "db=env"},
		{"db=/database/creds/app/", ""},
		{"app=secret/data/app", "app=yaml"},
		{"db", ""},
		{"db=", "db=json"},
		{"=x/y", ""},
		{"../x=a/b", ""},
		{"..=a/b", ""},
		{"a/b=c", ""},
		{"db=a/b", "other=env"},
		{"db=a/b", "db=toml"},
		{"db=a/b", "db"},
		{"dé=a/b", ""},
		{strings.Repeat("a", 200) + "=a/b", ""},
		{"a.b-c_d=x=y", "a.b-c_d=env"},
		{"db\n=a/b", ""},
		{"db=a/b\x00", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, secret, format string) {
		c := validConfig()
		c.Secrets = []string{secret}
		if format != "" {
			c.Formats = []string{format}
		}
		specs, err := c.Validate(vaultEnv())
		if err != nil {
			if !strings.HasPrefix(err.Error(), "--secret ") && !strings.HasPrefix(err.Error(), "--format ") {
				t.Fatalf("error %q does not name the flag", err)
			}
			return
		}
		if len(specs) != 1 {
			t.Fatalf("%d specs for one --secret", len(specs))
		}
		s := specs[0]
		if s.Name == "" || s.Name == "." || s.Name == ".." || strings.HasPrefix(s.Name, ".") || len(s.Name) > 128 {
			t.Fatalf("accepted name %q", s.Name)
		}
		file := filepath.Join(c.SecretsDir, s.Name)
		if filepath.Dir(file) != c.SecretsDir || filepath.Base(file) != s.Name {
			t.Fatalf("name %q makes file %s, outside %s", s.Name, file, c.SecretsDir)
		}
		if s.Path == "" || strings.HasPrefix(s.Path, "/") || strings.HasSuffix(s.Path, "/") {
			t.Fatalf("accepted path %q", s.Path)
		}
		if !strings.HasPrefix(secret, s.Name+"=") {
			t.Fatalf("name %q is not what was given in %q", s.Name, secret)
		}
		if !render.ValidFormat(s.Format) {
			t.Fatalf("accepted format %q", s.Format)
		}
	})
}
