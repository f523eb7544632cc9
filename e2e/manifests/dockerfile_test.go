package manifests

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct {
	line int    // where it starts, 1-based
	cmd  string // FROM, RUN, ... in upper case
	args string
}

func (in instruction) String() string {
	return fmt.Sprintf("Dockerfile:%d: %s %s", in.line, in.cmd, in.args)
}

// stage is one FROM section of a Dockerfile.
type stage struct {
	from, name string
	body       []instruction // after the FROM
}

// dockerfile is what the tests need to know of the Dockerfile.
type dockerfile struct {
	globalArgs map[string]string // ARGs before the first FROM, with their defaults
	stages     []stage
}

// parseDockerfile splits src into instructions the way BuildKit does for
// the subset this repository uses: comment lines dropped (also inside a
// continued instruction), lines ending in a backslash joined to the next.
func parseDockerfile(src string) (*dockerfile, error) {
	var ins []instruction
	var cur *instruction
	var b strings.Builder
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (cur == nil && trimmed == "") {
			continue
		}
		if cur == nil {
			cmd, rest, _ := strings.Cut(trimmed, " ")
			cur = &instruction{line: i + 1, cmd: strings.ToUpper(cmd)}
			line = rest
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			b.WriteString(body)
			continue
		}
		b.WriteString(line)
		cur.args = strings.TrimSpace(b.String())
		ins = append(ins, *cur)
		cur = nil
		b.Reset()
	}
	if cur != nil {
		return nil, fmt.Errorf("Dockerfile:%d: %s continues past the end of the file", cur.line, cur.cmd)
	}
	d := &dockerfile{globalArgs: map[string]string{}}
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			s := stage{from: os.Expand(f[0], func(k string) string { return d.globalArgs[k] })}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			d.stages = append(d.stages, s)
		case len(d.stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			d.globalArgs[k] = v
		case len(d.stages) > 0:
			last := &d.stages[len(d.stages)-1]
			last.body = append(last.body, in)
		}
	}
	return d, nil
}

func (d *dockerfile) stage(name string) *stage {
	for i := range d.stages {
		if d.stages[i].name == name {
			return &d.stages[i]
		}
	}
	return nil
}

// find returns the index of the first instruction of s that is cmd and
// whose arguments match re, or -1.
func (s *stage) find(cmd string, re *regexp.Regexp) int {
	return slices.IndexFunc(s.body, func(in instruction) bool { return in.cmd == cmd && re.MatchString(in.args) })
}

// buildLine is the Dockerfile's `go build` RUN line, split into words by a
// real shell with the stage's ARGs set, as `docker build` would.
type buildLine struct {
	in       instruction
	env      []string // NAME=value words before the command
	args     []string // the go command's arguments: build ...
	outDir   string   // the -o directory
	binaries []string // the command names built: vault-init, ...
}

var goBuildRun = regexp.MustCompile(`(^|\s)go build\s`)

// parseBuildLine finds the builder stage's `go build` RUN and has sh split
// it, with VERSION=version, the target platform set to this machine's, and
// the stage's other ARGs at their defaults.
func parseBuildLine(t *testing.T, d *dockerfile, version string) buildLine {
	t.Helper()
	s := d.stage("build")
	if s == nil {
		t.Fatal("Dockerfile: no stage named build")
	}
	i := s.find("RUN", goBuildRun)
	if i < 0 {
		t.Fatal("Dockerfile: no RUN ... go build in stage build")
	}
	bl := buildLine{in: s.body[i]}
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, in := range s.body[:i] {
		if in.cmd == "ENV" {
			t.Fatalf("%s: the test does not model ENV in the build stage; extend it", in)
		}
		if in.cmd != "ARG" {
			continue
		}
		k, v, _ := strings.Cut(in.args, "=")
		switch k {
		case "VERSION":
			v = version
		case "TARGETOS":
			v = runtime.GOOS
		case "TARGETARCH":
			v = runtime.GOARCH
		}
		env = append(env, k+"="+v)
	}
	text := bl.in.args
	for strings.HasPrefix(text, "--") { // RUN options such as --mount=type=cache,...
		_, text, _ = strings.Cut(text, " ")
		text = strings.TrimLeft(text, " \t")
	}
	sh := exec.Command("sh", "-c", `eval "set -- $1" && printf '%s\0' "$@"`, "sh", text)
	sh.Env = env
	out, err := sh.Output()
	if err != nil {
		t.Fatalf("%s: split into words with sh: %v", bl.in, err)
	}
	words := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	assign := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	for len(words) > 0 && assign.MatchString(words[0]) {
		bl.env, words = append(bl.env, words[0]), words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		t.Fatalf("%s: want a plain [NAME=value...] go build command, got %q", bl.in, words)
	}
	bl.args = words[1:]
	for j, w := range bl.args {
		switch {
		case w == "-o" && j+1 < len(bl.args):
			bl.outDir = bl.args[j+1]
		case strings.HasPrefix(w, "./cmd/"):
			bl.binaries = append(bl.binaries, path.Base(w))
		}
	}
	if !strings.HasSuffix(bl.outDir, "/") {
		t.Fatalf("%s: want -o DIR/ (a directory for all the binaries), got %q", bl.in, bl.outDir)
	}
	return bl
}

func readDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	d, err := parseDockerfile(repoFile(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// imageBinaries returns the absolute paths at which the image holds the
// binaries, for the manifests' commands to be checked against.
func imageBinaries(t *testing.T) []string {
	t.Helper()
	d := readDockerfile(t)
	bl := parseBuildLine(t, d, "dev")
	final := &d.stages[len(d.stages)-1]
	i := final.find("COPY", regexp.MustCompile(`^--from=build\s+`+regexp.QuoteMeta(bl.outDir)+`\s+\S+/$`))
	if i < 0 {
		t.Fatalf("Dockerfile: the final stage does not COPY --from=build %s DIR/", bl.outDir)
	}
	f := strings.Fields(final.body[i].args)
	var paths []string
	for _, b := range bl.binaries {
		paths = append(paths, path.Join(f[len(f)-1], b))
	}
	return paths
}

// TestDockerfile checks the image's shape: what a user pulling it, or a
// cluster admitting it, would notice.
func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	build := d.stage("build")
	if build == nil {
		t.Fatal("Dockerfile: no stage named build")
	}
	final := &d.stages[len(d.stages)-1]
	modGo := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindStringSubmatch(repoFile(t, "go.mod"))
	if modGo == nil {
		t.Fatal("go.mod: no go directive")
	}
	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"builder's Go is at least go.mod's", func(t *testing.T) {
			m := regexp.MustCompile(`^golang:(\d+)\.(\d+)`).FindStringSubmatch(build.from)
			if m == nil {
				t.Fatalf("build stage FROM %s: want golang:MAJOR.MINOR...", build.from)
			}
			if version(m[1], m[2]) < version(modGo[1], modGo[2]) {
				t.Errorf("build stage FROM %s is older than go.mod's go %s.%s", build.from, modGo[1], modGo[2])
			}
		}},
		{"modules are a cached layer of their own", func(t *testing.T) {
			mod := build.find("COPY", regexp.MustCompile(`^go\.mod go\.sum \./?$`))
			dl := build.find("RUN", regexp.MustCompile(`^go mod download$`))
			src := build.find("COPY", regexp.MustCompile(`^\. \./?$`))
			if mod < 0 || dl < 0 || src < 0 || mod >= dl || dl >= src {
				t.Errorf("want COPY go.mod go.sum ./, then RUN go mod download, then COPY . . (at %d, %d, %d)", mod, dl, src)
			}
		}},
		{"static, stripped, reproducible, versioned build", func(t *testing.T) {
			bl := parseBuildLine(t, d, "v1.2.3")
			if !slices.Contains(bl.env, "CGO_ENABLED=0") {
				t.Errorf("%s: want CGO_ENABLED=0, got env %q", bl.in, bl.env)
			}
			if !slices.Contains(bl.args, "-trimpath") {
				t.Errorf("%s: want -trimpath", bl.in)
			}
			i := slices.Index(bl.args, "-ldflags")
			want := "-s -w -X github.com/podlease/podlease/internal/version.Version=v1.2.3"
			if i < 0 || i+1 >= len(bl.args) || bl.args[i+1] != want {
				t.Errorf("%s: want -ldflags %q", bl.in, want)
			}
			if want := []string{"vault-init", "vault-renew", "vault-revoke"}; !slices.Equal(bl.binaries, want) {
				t.Errorf("%s: builds %q, want %q", bl.in, bl.binaries, want)
			}
		}},
		{"final stage is distroless static nonroot", func(t *testing.T) {
			if final.from != "gcr.io/distroless/static-debian12:nonroot" {
				t.Errorf("final FROM %s", final.from)
			}
			if i := final.find("RUN", regexp.MustCompile(``)); i >= 0 {
				t.Errorf("%s: the final stage has no shell to run anything", final.body[i])
			}
		}},
		{"runs as a numeric non-root user", func(t *testing.T) {
			i := final.find("USER", regexp.MustCompile(`^65532:65532$`))
			if i < 0 {
				t.Error("final stage: want USER 65532:65532 (numeric, so the kubelet can verify runAsNonRoot)")
			}
		}},
		{"binaries in /usr/local/bin", func(t *testing.T) {
			want := []string{"/usr/local/bin/vault-init", "/usr/local/bin/vault-renew", "/usr/local/bin/vault-revoke"}
			if got := imageBinaries(t); !slices.Equal(got, want) {
				t.Errorf("image holds %q, want %q", got, want)
			}
		}},
		{"OCI labels", func(t *testing.T) {
			var labels string
			for _, in := range final.body {
				if in.cmd == "LABEL" {
					labels += " " + in.args
				}
			}
			for _, k := range []string{"title", "description", "source", "version", "revision"} {
				if !strings.Contains(labels, "org.opencontainers.image."+k+"=") {
					t.Errorf("final stage: no LABEL org.opencontainers.image.%s", k)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}

func version(major, minor string) int {
	a, _ := strconv.Atoi(major)
	b, _ := strconv.Atoi(minor)
	return a*1000 + b
}

// dockerContext copies what .dockerignore lets into the build context to a
// new directory, and returns it. .dockerignore must be an allow-list: "*"
// then "!PATH" lines, PATH a file or directory without wildcards.
func dockerContext(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	dst := filepath.Join(t.TempDir(), "src")
	var patterns []string
	for _, l := range strings.Split(repoFile(t, ".dockerignore"), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	if len(patterns) == 0 || patterns[0] != "*" {
		t.Fatalf(".dockerignore: want an allow-list starting with *, got %q", patterns)
	}
	for _, p := range patterns[1:] {
		rel, ok := strings.CutPrefix(p, "!")
		if !ok || strings.ContainsAny(rel, "*?[") {
			t.Fatalf(".dockerignore: %q: the test understands only !PATH after *; extend it", p)
		}
		src := filepath.Join(root, filepath.FromSlash(rel))
		fi, err := os.Stat(src)
		if err != nil {
			t.Fatalf(".dockerignore: %s: %v", p, err)
		}
		if fi.IsDir() {
			err = os.CopyFS(filepath.Join(dst, rel), os.DirFS(src))
		} else {
			err = testbed.CopyFile(filepath.Join(dst, rel), src)
		}
		if err != nil {
			t.Fatalf("copy build context: %v", err)
		}
	}
	return dst
}

// TestImageBinaries builds the binaries with the Dockerfile's own build line
// (only the -o directory differs) from the build context .dockerignore lets
// through, then checks each as a user of the image would: it needs no
// dynamic loader (the base image has none), carries no symbols or source
// paths, and reports the version it was built with.
func TestImageBinaries(t *testing.T) {
	const version = "v0.0.0-dockerfile-test"
	bl := parseBuildLine(t, readDockerfile(t), version)
	src := dockerContext(t)
	out := t.TempDir()

	args := slices.Clone(bl.args)
	args[slices.Index(args, "-o")+1] = out + "/"
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), bl.env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: go %s (in a copy of the build context): %v\n%s", bl.in, strings.Join(args, " "), err, b)
	}

	for _, name := range bl.binaries {
		bin := filepath.Join(out, name)
		t.Run(name, func(t *testing.T) {
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			checks := []struct {
				name  string
				check func(t *testing.T)
			}{
				{"static", func(t *testing.T) {
					for _, p := range f.Progs {
						if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
							t.Errorf("has a %s program header: needs a dynamic loader the image does not have", p.Type)
						}
					}
					if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
						t.Errorf("links %q", libs)
					}
				}},
				{"stripped", func(t *testing.T) {
					for _, s := range []string{".symtab", ".debug_info"} {
						if f.Section(s) != nil {
							t.Errorf("has section %s: -ldflags -s -w should have dropped it", s)
						}
					}
				}},
				{"trimpath", func(t *testing.T) {
					b, err := os.ReadFile(bin)
					if err != nil {
						t.Fatal(err)
					}
					if bytes.Contains(b, []byte(src)) {
						t.Errorf("contains the build directory %s: -trimpath missing", src)
					}
				}},
				{"version", func(t *testing.T) {
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
					defer cancel()
					var stdout, stderr bytes.Buffer
					cmd := exec.CommandContext(ctx, bin, "--version")
					cmd.Stdout, cmd.Stderr = &stdout, &stderr
					if err := cmd.Run(); err != nil {
						t.Fatalf("%s --version: %v\n%s", name, err, stderr.Bytes())
					}
					if got, want := stdout.String(), name+" "+version+"\n"; got != want {
						t.Errorf("%s --version printed %q, want %q", name, got, want)
					}
				}},
			}
			for _, c := range checks {
				t.Run(c.name, c.check)
			}
		})
	}
}
