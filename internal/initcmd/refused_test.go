package initcmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesTemplate: a template that calls a consul-template function
// podlease leaves out, writes to Vault, or reads a path that is not a
// --secret is refused before login (the Vault address is closed, so a
// login attempt would end in exit 1, not 2), naming what and why.
func TestRunRefusesTemplate(t *testing.T) {
	t.Parallel()
	const consul = "it reads Consul"
	for _, tc := range []struct {
		name, text string
		want       []string // all in stderr
	}{
		{"key", `{{ key "service/redis/maxconns" }}`, []string{`"key"`, consul}},
		{"keyExists", `{{ if keyExists "a" }}x{{ end }}`, []string{`"keyExists"`, consul}},
		{"keyOrDefault", `{{ keyOrDefault "a" "b" }}`, []string{`"keyOrDefault"`, consul}},
		{"ls", `{{ range ls "a" }}{{ .Key }}{{ end }}`, []string{`"ls"`, consul}},
		{"safeLs", `{{ range safeLs "a" }}{{ end }}`, []string{`"safeLs"`, consul}},
		{"tree", `{{ range tree "a" }}{{ end }}`, []string{`"tree"`, consul}},
		{"safeTree", `{{ range safeTree "a" }}{{ end }}`, []string{`"safeTree"`, consul}},
		{"service", `{{ range service "web" }}{{ .Address }}{{ end }}`, []string{`"service"`, consul}},
		{"services", `{{ range services }}{{ end }}`, []string{`"services"`, consul}},
		{"connect", `{{ range connect "web" }}{{ end }}`, []string{`"connect"`, consul}},
		{"node", `{{ with node }}{{ end }}`, []string{`"node"`, consul}},
		{"nodes", `{{ range nodes }}{{ end }}`, []string{`"nodes"`, consul}},
		{"datacenters", `{{ range datacenters }}{{ end }}`, []string{`"datacenters"`, consul}},
		{"partitions", `{{ range partitions }}{{ end }}`, []string{`"partitions"`, consul}},
		{"peerings", `{{ range peerings }}{{ end }}`, []string{`"peerings"`, consul}},
		{"exportedServices", `{{ range exportedServices }}{{ end }}`, []string{`"exportedServices"`, consul}},
		{"caRoots", `{{ range caRoots }}{{ end }}`, []string{`"caRoots"`, consul}},
		{"caLeaf", `{{ with caLeaf "web" }}{{ end }}`, []string{`"caLeaf"`, consul}},
		{"byKey", `{{ byKey . }}`, []string{`"byKey"`, consul}},
		{"byTag", `{{ byTag . }}`, []string{`"byTag"`, consul}},
		{"byPort", `{{ byPort . }}`, []string{`"byPort"`, consul}},
		{"byMeta", `{{ byMeta "a" . }}`, []string{`"byMeta"`, consul}},
		{"nomadService", `{{ range nomadService "web" }}{{ end }}`, []string{`"nomadService"`, "it reads Nomad"}},
		{"nomadServices", `{{ range nomadServices }}{{ end }}`, []string{`"nomadServices"`, "it reads Nomad"}},
		{"nomadVar", `{{ with nomadVar "a" }}{{ end }}`, []string{`"nomadVar"`, "it reads Nomad"}},
		{"nomadVarExists", `{{ nomadVarExists "a" }}`, []string{`"nomadVarExists"`, "it reads Nomad"}},
		{"nomadVarList", `{{ range nomadVarList }}{{ end }}`, []string{`"nomadVarList"`, "it reads Nomad"}},
		{"nomadVarListSafe", `{{ range nomadVarListSafe }}{{ end }}`, []string{`"nomadVarListSafe"`, "it reads Nomad"}},
		{"file", `{{ file "/etc/hostname" }}`, []string{`"file"`, "mount that file into the app"}},
		{"plugin", `{{ plugin "/bin/echo" "{}" }}`, []string{`"plugin"`, "runs a program"}},
		{"writeToFile", `{{ "x" | writeToFile "/tmp/x" "" "" "0644" }}`, []string{`"writeToFile"`, "writes a file of its own"}},
		{"sockaddr", `{{ sockaddr "GetPrivateIP" }}`, []string{`"sockaddr"`, "network interfaces"}},
		{"spew_dump", `{{ spew_dump . }}`, []string{`"spew_dump"`, "debugging"}},
		{"spew_sdump", `{{ spew_sdump . }}`, []string{`"spew_sdump"`, "debugging"}},
		{"spew_printf", `{{ spew_printf "%v" . }}`, []string{`"spew_printf"`, "debugging"}},
		{"spew_sprintf", `{{ spew_sprintf "%v" . }}`, []string{`"spew_sprintf"`, "debugging"}},
		{"pkiCert", `{{ with pkiCert "pki/issue/web" "common_name=a" }}{{ .Cert }}{{ end }}`, []string{`"pkiCert"`, "Vault write"}},
		{"sprig", `{{ sprig_upper "a" }}`, []string{`"sprig_upper"`, "sprig library is not included"}},
		{"unknown", `{{ vault "a" }}`, []string{`"vault"`, "not a consul-template function"}},
		{"secret with parameters", `{{ with secret "pki/issue/web" "common_name=web" }}{{ .Data.certificate }}{{ end }}`, []string{`secret "pki/issue/web" with parameters writes to Vault`}},
		{"secret not given with --secret", "{{ with secret \"database/creds/app\" }}{{ end }}\n{{ with secret \" /secret/other/ \" }}{{ end }}", []string{"reads secret/other, which is not a --secret: add --secret NAME=secret/other"}},
		{"refused inside define", `{{ define "x" }}{{ key "a" }}{{ end }}{{ template "x" }}`, []string{`"key"`, consul}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDirs(t)
			file := filepath.Join(t.TempDir(), "app.tmpl")
			if err := os.WriteFile(file, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runInit(t, append(d.flags(), "--jwt-file", jwtFile, "--role", "web", "--secret", "db=database/creds/app", "--template", "db="+file), map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"})
			if r.code != 2 {
				t.Errorf("exit code %d, want 2 (refused before login)\n%s", r.code, r.stderr)
			}
			for _, w := range append(tc.want, file) {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "log in") {
				t.Errorf("tried to log in:\n%s", r.stderr)
			}
		})
	}
}
