package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/e2e/testbed"
)

// The template reference test: every template in testdata/templates is
// rendered by the real Vault Agent (init mode, exit_after_auth, the same
// template file) and by vault-init --template, and the bytes must be the
// same. Database credentials differ by nature (each tool gets its own
// user), so for templates that read database/creds/ the username and
// password are masked: the Agent's output with its credentials replaced by
// patterns must match vault-init's output exactly, each pattern matching
// one and the same value throughout.

const (
	tplDir     = "testdata/templates"
	tplRole    = "tpl"            // kubernetes role and policy of this test
	tplDBRole  = "tpl"            // database/creds/tpl: its own role, so no other test counts its leases
	tplEnvName = "TPL_ENV"        // set for both tools, read by env.tmpl
	tplEnvVal  = "env value ✓ $x" // with characters a shell would mind
	tplKV2     = "secret/data/tpl"
)

// tplData is the KV v2 secret most templates render: values with quotes,
// newlines, unicode, HTML, empty strings, numbers, booleans, lists and maps.
var tplData = map[string]any{
	"username":        "app-user",
	"password":        `p@ss"w'rd<&>` + "\\",
	"multiline":       "line1\nline2\n",
	"unicode":         "héllo wörld ☃ 日本",
	"empty":           "",
	"number":          42,
	"float":           3.25,
	"bool":            true,
	"list":            []any{"a", "b", "c"},
	"nested":          map[string]any{"host": "db.internal", "port": 5432, "opts": map[string]any{"ssl": true, "mode": "verify-full"}},
	"csv":             "a, b ,c",
	"kvpairs":         "k1=v1,k2=v2=x,k3",
	"json":            `{"x":1,"y":[true,null,"s"]}`,
	"yaml":            "a: 1\nb:\n  - x\n  - 'y'\n",
	"b64":             base64.StdEncoding.EncodeToString([]byte("decoded ✓ text")),
	"b64url":          base64.URLEncoding.EncodeToString([]byte("??>>~~")),
	"html":            "<script>alert('x') && 1</script>",
	"spaces":          "  padded value  ",
	"path/with/slash": "exploded",
	"dotted.key":      "d",
	"yes":             "yes",
	"numstr":          "0123",
	"mixedcase":       "Hello World",
	"url":             "https://api.example.com/v1?a=b&c=d",
	"count":           "3",
}

const tplPolicy = `
path "secret/data/tpl" { capabilities = ["read"] }
path "secret/data/tplrenew" { capabilities = ["read"] }
path "secret/metadata/" { capabilities = ["list"] }
path "secret/metadata/tpldir" { capabilities = ["list"] }
path "kv1/app" { capabilities = ["read"] }
path "database/creds/tpl" { capabilities = ["read"] }
path "database/static-creds/app-static" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
`

var tplSetup struct {
	once sync.Once
	err  error
}

// setupTemplateBed configures what the template tests read, once per run.
func setupTemplateBed(t *testing.T) {
	t.Helper()
	tplSetup.once.Do(func() { tplSetup.err = configureTemplateBed() })
	if tplSetup.err != nil {
		t.Fatal(tplSetup.err)
	}
}

func configureTemplateBed() error {
	ctx := context.Background()
	root := bed.Root()
	steps := []struct {
		what string
		do   func() error
	}{
		{"mount kv1 (KV v1)", func() error {
			return root.Sys().MountWithContext(ctx, "kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}})
		}},
		{"write kv1/app", func() error {
			_, err := root.Logical().WriteWithContext(ctx, "kv1/app", map[string]any{"user": "v1user", "token": "t0k3n-v1 \"q\"", "port": "8080"})
			return err
		}},
		{"write " + tplKV2, func() error {
			_, err := root.Logical().WriteWithContext(ctx, tplKV2, map[string]any{"data": tplData})
			return err
		}},
		{"write secret/data/tplrenew", func() error {
			_, err := root.Logical().WriteWithContext(ctx, "secret/data/tplrenew", map[string]any{"data": map[string]any{"v": "1"}})
			return err
		}},
		{"write secret/data/tpldir/*", func() error {
			for _, k := range []string{"one", "two", "sub/three"} {
				if _, err := root.Logical().WriteWithContext(ctx, "secret/data/tpldir/"+k, map[string]any{"data": map[string]any{"k": k}}); err != nil {
					return err
				}
			}
			return nil
		}},
		{"create database role tpl", func() error { return bed.CreateDBRole(tplDBRole, time.Hour, 24*time.Hour) }},
		{"put policy tpl", func() error { return root.Sys().PutPolicyWithContext(ctx, tplRole, tplPolicy) }},
		{"create kubernetes role tpl", func() error { return bed.CreateK8sRole(tplRole, time.Hour, 24*time.Hour, tplRole) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	noteSecret(tplData["password"].(string), "t0k3n-v1 \"q\"")
	return nil
}

// revokeTemplateLeases revokes what the template tests leave behind: the
// Agent in init mode does not revoke, and vault-init hands its leases to a
// vault-renew these tests do not always run.
func revokeTemplateLeases() {
	_, _ = bed.Root().Logical().Write("sys/leases/revoke-prefix/"+testbed.DBMount+"/creds/"+tplDBRole, nil)
}

var literalSecret = regexp.MustCompile(`secret "([^"]+)"`)

// corpusTemplate is one file of the corpus and the Vault paths it reads.
type corpusTemplate struct {
	name, file string
	paths      []string // literal {{ secret "PATH" }}, in order; the first is the template's own
}

func loadCorpus(t *testing.T) []corpusTemplate {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(tplDir, "*.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []corpusTemplate
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		c := corpusTemplate{name: strings.TrimSuffix(filepath.Base(f), ".tmpl"), file: abs}
		seen := map[string]bool{}
		for _, m := range literalSecret.FindAllStringSubmatch(testbed.ReadFile(t, f), -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				c.paths = append(c.paths, m[1])
			}
		}
		if len(c.paths) == 0 {
			t.Fatalf("%s reads no literal secret path: give it one (vault-init attaches a template to a --secret)", f)
		}
		out = append(out, c)
	}
	return out
}

// tplAgentConfig renders every corpus template in one Vault Agent, the
// way the injector's init container runs it, plus one file that tells the
// test which database credential the Agent got.
func tplAgentConfig(p *pod, corpus []corpusTemplate, outDir string) testbed.AgentConfig {
	cfg := testbed.AgentConfig{
		VaultAddr: bed.VaultAddr, Role: tplRole, JWTFile: p.jwtFile,
		SinkFile: filepath.Join(p.stateDir, "agent-token"), PIDFile: filepath.Join(p.dir, "agent.pid"),
		ExitAfterAuth: true,
	}
	for _, c := range corpus {
		cfg.Templates = append(cfg.Templates, testbed.AgentTemplate{Source: c.file, Destination: filepath.Join(outDir, c.name)})
	}
	cfg.Templates = append(cfg.Templates, testbed.AgentTemplate{
		Contents:    `{{ with secret "database/creds/` + tplDBRole + `" }}{{ .Data.username }}` + "\n" + `{{ .Data.password }}{{ end }}`,
		Destination: filepath.Join(outDir, "_dbcreds"),
	})
	return cfg
}

func TestTemplatesMatchVaultAgent(t *testing.T) {
	setupTemplateBed(t)
	t.Cleanup(revokeTemplateLeases)
	corpus := loadCorpus(t)
	if len(corpus) < 40 {
		t.Fatalf("the corpus has %d templates, want at least 40", len(corpus))
	}

	// Vault Agent renders the whole corpus in one run.
	agentPod := newPod(t)
	agentOut := filepath.Join(agentPod.dir, "agent-out")
	if err := os.Mkdir(agentOut, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testbed.RunAgent(ctx, agentPod.dir, tplAgentConfig(agentPod, corpus, agentOut), tplEnvName+"="+tplEnvVal); err != nil {
		t.Fatal(err)
	}
	agentCreds := strings.SplitN(testbed.ReadFile(t, filepath.Join(agentOut, "_dbcreds")), "\n", 2)
	if len(agentCreds) != 2 || agentCreds[0] == "" || agentCreds[1] == "" {
		t.Fatalf("the Agent's database credential file is %q", agentCreds)
	}
	noteSecret(agentCreds[1])

	matched := 0
	for _, c := range corpus {
		t.Run(c.name, func(t *testing.T) {
			want := testbed.ReadFile(t, filepath.Join(agentOut, c.name))
			p := newPod(t)
			args := p.initArgs("--role", tplRole, "--secret", "t="+c.paths[0], "--template", "t="+c.file)
			for i, other := range c.paths[1:] {
				args = append(args, "--secret", fmt.Sprintf("other%d=%s", i, other))
			}
			r := run(t, "vault-init", args, append(p.env, tplEnvName+"="+tplEnvVal)...)
			if r.code != 0 {
				t.Fatalf("vault-init exited %d:\n%s", r.code, r.stderr)
			}
			got := testbed.ReadFile(t, filepath.Join(p.secretsDir, "t"))
			if strings.HasPrefix(c.paths[0], testbed.DBMount+"/creds/") {
				if err := matchMasked(want, got, agentCreds[0], agentCreds[1]); err != nil {
					t.Errorf("%s: %v\nVault Agent:\n%s\nvault-init:\n%s", c.file, err, mask(want, agentCreds[0], agentCreds[1]), "(not shown: holds a password)")
				}
			} else if got != want {
				t.Errorf("%s: vault-init's bytes differ from Vault Agent's\nVault Agent: %q\nvault-init:  %q", c.file, want, got)
			}
			if !t.Failed() {
				matched++
			}
		})
	}
	t.Logf("%d of %d templates byte-identical to Vault Agent's rendering", matched, len(corpus))
}

const (
	userMark = "\x00USERNAME\x00"
	passMark = "\x00PASSWORD\x00"
)

func mask(s, user, pass string) string {
	return strings.NewReplacer(user, userMark, pass, passMark).Replace(s)
}

// matchMasked checks that got is want with the Agent's database username
// and password replaced by one other username and one other password, and
// notes that password as a secret.
func matchMasked(want, got, user, pass string) error {
	masked := mask(want, user, pass)
	if !strings.Contains(masked, userMark) && !strings.Contains(masked, passMark) {
		return fmt.Errorf("the Agent's output does not hold its database credential: nothing to mask")
	}
	marks := regexp.MustCompile("\x00[A-Z]+\x00")
	var re strings.Builder
	re.WriteString(`^`)
	for i, part := range marks.Split(masked, -1) {
		if i > 0 {
			re.WriteString(`([A-Za-z0-9_.-]+)`)
		}
		re.WriteString(regexp.QuoteMeta(part))
	}
	re.WriteString(`$`)
	groups := marks.FindAllString(masked, -1)
	pattern := re.String()
	m := regexp.MustCompile(pattern).FindStringSubmatch(got)
	if m == nil {
		return fmt.Errorf("differs from the Agent's output beyond the database credential")
	}
	vals := map[string]string{}
	for i, g := range groups {
		v := m[i+1]
		if prev, ok := vals[g]; ok && prev != v {
			return fmt.Errorf("the %s is not the same value throughout", strings.Trim(g, "\x00"))
		}
		vals[g] = v
	}
	noteSecret(vals[passMark])
	if vals[userMark] == user || vals[passMark] == pass {
		return fmt.Errorf("vault-init rendered the Agent's own credential")
	}
	return nil
}

// TestTemplateReRenderedByVaultRenew: what a template needs at render time
// works in vault-renew too: a KV v2 short path (read at its data/ path, as
// vault-init recorded) and a list, re-rendered when the secret changes.
func TestTemplateReRenderedByVaultRenew(t *testing.T) {
	setupTemplateBed(t)
	root := bed.Root()
	if _, err := root.Logical().Write("secret/data/tplrenew", map[string]any{"data": map[string]any{"v": "1"}}); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	tmpl := filepath.Join(p.dir, "renew.tmpl")
	text := `{{ with secret "secret/tplrenew" }}v={{ .Data.data.v }} keys={{ range secrets "secret/metadata/tpldir" }}{{ . }},{{ end }} sum={{ .Data.data.v | sha256Hex | printf "%.8s" }}{{ end }}` + "\n"
	if err := os.WriteFile(tmpl, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p.mustInit("--role", tplRole, "--secret", "r=secret/tplrenew", "--template", "r="+tmpl)
	file := filepath.Join(p.secretsDir, "r")
	if got, want := testbed.ReadFile(t, file), "v=1 keys=one,sub/,two, sum=6b86b273\n"; got != want {
		t.Fatalf("vault-init rendered %q, want %q", got, want)
	}
	start(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--kv-interval", "1s"}, p.env...)
	if _, err := root.Logical().Write("secret/data/tplrenew", map[string]any{"data": map[string]any{"v": "2"}}); err != nil {
		t.Fatal(err)
	}
	want := "v=2 keys=one,sub/,two, sum=d4735e3a\n"
	deadline := time.Now().Add(20 * time.Second)
	for testbed.ReadFile(t, file) != want && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := testbed.ReadFile(t, file); got != want {
		t.Fatalf("after the KV change vault-renew rendered %q, want %q", got, want)
	}
}

// TestTemplateTypoExits1: a template naming a field the secret does
// not have fails after Vault was contacted, so it exits 1 (2 promises
// Vault was not contacted), names the key, and leaves no lease behind.
func TestTemplateTypoExits1(t *testing.T) {
	t.Parallel()
	const role = "review-typo"
	if err := bed.CreateDBRole(role, time.Minute, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	tmpl := filepath.Join(p.dir, "db.tmpl")
	if err := os.WriteFile(tmpl, []byte("user={{ .Data.usernme }}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+role, "--template", "db="+tmpl), p.env...)
	if r.code != 1 {
		t.Errorf("exit %d, want 1:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"usernme", tmpl, `secret \"db\"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	assertNothingLeft(t, p)
	if left := leasesLeft(t, "database/creds/"+role, 5*time.Second); len(left) > 0 {
		t.Errorf("leases left after the failure: %v", left)
	}
}

// TestRunawayTemplateFailsCleanly: a template that would never end (a
// define calling itself, a loop over a count from the secret) makes
// vault-init exit 1 naming the bound, as a typo does: no crash, no file,
// no lease left.
func TestRunawayTemplateFailsCleanly(t *testing.T) {
	t.Parallel()
	const role = "review-runaway"
	if err := bed.CreateDBRole(role, time.Minute, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"recursion", `{{ define "a" }}{{ executeTemplate "a" }}{{ end }}{{ executeTemplate "a" }}`, "nested more than 100 deep"},
		{"output", `{{ range loop 100000000000 }}{{ $.Data.username }}{{ end }}`, "writes more than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPod(t)
			tmpl := filepath.Join(p.dir, "db.tmpl")
			if err := os.WriteFile(tmpl, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			r := run(t, "vault-init", p.initArgs("--secret", "db=database/creds/"+role, "--template", "db="+tmpl, "--timeout", "20s"), p.env...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "goroutine ") {
				t.Errorf("exit %d; want 1 with %q and no goroutine dump:\n%.3000s", r.code, tc.want, r.stderr)
			}
			assertNothingLeft(t, p)
		})
	}
	if left := leasesLeft(t, "database/creds/"+role, 5*time.Second); len(left) > 0 {
		t.Errorf("leases left after the failures: %v", left)
	}
}
