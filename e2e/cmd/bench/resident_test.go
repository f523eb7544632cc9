package main

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestSymbolPackage(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"net/http.(*Transport).dialConn":        "net/http",
		"gopkg.in/yaml%2ev2.Marshal":            "gopkg.in/yaml.v2",
		"go.yaml.in/yaml/v2.(*parser).parse":    "go.yaml.in/yaml/v2",
		"type:*net/http.Request":                "net/http",
		"type:[]github.com/a/b.T":               "github.com/a/b",
		"runtime.mallocgc":                      "runtime",
		"slices.Sort[go.shape.[]string,string]": "slices",
		"go:func.*":                             "go:func.*",
		"main.main":                             "main",
		"github.com/x/y.F.func1":                "github.com/x/y",
	} {
		if got := symbolPackage(in); got != want {
			t.Errorf("symbolPackage(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestPackageGroup(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"runtime":                               "Go runtime",
		"internal/runtime/maps":                 "Go runtime",
		"net/http":                              "net, net/http, crypto, TLS",
		"crypto/internal/fips140/nistec":        "net, net/http, crypto, TLS",
		"encoding/json":                         "reflect, encoding/json, fmt, log/slog",
		"text/template/parse":                   "text/template",
		"github.com/hashicorp/vault/api":        "Vault client library and its dependencies",
		"golang.org/x/net/http2":                "Vault client library and its dependencies",
		"github.com/podlease/podlease/internal": "podlease",
		"strconv":                               "rest of the standard library",
		"go.yaml.in/yaml/v2":                    "other modules",
		"(rodata: types)":                       "types (unnamed rodata)",
		"netip":                                 "rest of the standard library",
		"network":                               "rest of the standard library",
	} {
		if got := packageGroup(in); got != want {
			t.Errorf("packageGroup(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestArenaRanges(t *testing.T) {
	t.Parallel()
	const a = 0x2deb08000000 // 64 MiB aligned
	maps := []mapping{
		{start: 0x400000, end: 0x500000, path: "/bin/x"},
		{start: a, end: a + 0x800000, perms: "rw-p"},                 // in use
		{start: a + 0x800000, end: a + 0x4000000, perms: "---p"},     // the rest of the reservation
		{start: 0x7f0000000000, end: 0x7f0002000000, perms: "rw-p"},  // 64 MiB aligned, 32 MiB long
		{start: 0x7f0002000000, end: 0x7f0002001000, path: "[vdso]"}, // and what follows is not anonymous
	}
	// A reservation of the page allocator's summaries: read-write in
	// its middle only.
	const c = a + 8*arenaSize
	maps = append(maps,
		mapping{start: c - 0x1000, end: c + 0x100000, perms: "---p"},
		mapping{start: c + 0x100000, end: c + 0x101000, perms: "rw-p"},
		mapping{start: c + 0x101000, end: c + 4*arenaSize, perms: "---p"},
	)
	const b = a + 4*arenaSize
	maps = append(maps,
		mapping{start: b - 0x10000, end: b + 0x800000, perms: "rw-p"}, // merged with 64 KiB of other memory below
		mapping{start: b + 0x800000, end: b + arenaSize, perms: "---p"},
	)
	got := arenaRanges(maps)
	want := [][2]uint64{{a, a + arenaSize}, {b, b + arenaSize}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("arenaRanges = %x; want %x", got, want)
	}
}

func TestParseVariant(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "renew")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := parseVariant("limit=renew:" + bin + ":GOMEMLIMIT=7MiB:GODEBUG=gctrace=1")
	if err != nil {
		t.Fatal(err)
	}
	want := variant{label: "limit", kind: sRenew, bin: bin, env: []string{"GOMEMLIMIT=7MiB", "GODEBUG=gctrace=1"}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("parseVariant = %+v; want %+v", v, want)
	}
	for _, bad := range []string{"", "x", "x=renew", "x=renew:", "x=agent:" + bin, "x=renew:" + bin + ".missing"} {
		if _, err := parseVariant(bad); err == nil {
			t.Errorf("parseVariant(%q): no error", bad)
		}
	}
}

// TestAttributeSelf attributes the test binary's own resident pages: the
// function table must parse, a runtime function must be found where it
// is, and the pages must add up to what the kernel counts.
func TestAttributeSelf(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("reads /proc and a linux/amd64 ELF binary")
	}
	// A test binary has no symbol table: build a small program, with one.
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"io\"\n\t\"os\"\n\t\"runtime\"\n)\n\nfunc main() {\n\truntime.GC()\n\t_, _ = io.Copy(io.Discard, os.Stdin)\n}\n"
	for name, text := range map[string]string{"go.mod": "module sleeper\n\ngo 1.25\n", "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "sleeper")
	build := exec.Command("go", "build", "-o", exe, ".")
	build.Dir, build.Env = dir, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(exe)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	time.Sleep(200 * time.Millisecond) // past its start-up

	bm, err := loadBinaryMap(exe)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == "runtime.GC" {
			if sp, ok := bm.find(s.Value); !ok || sp.pkg != "runtime" || sp.kind != kText {
				t.Errorf("find(runtime.GC) = %+v, %v; want runtime's text", sp, ok)
			}
		}
	}
	// The function table is shared out nearly whole: only alignment
	// padding and the header stay unnamed.
	pcln := bm.section(bm.spans[len(bm.spans)/2].start)
	for _, s := range bm.sections {
		if s.Name == ".gopclntab" {
			pcln = s
		}
	}
	var named uint64
	kinds := map[string]bool{}
	for _, sp := range bm.spans {
		if sp.start >= pcln.Addr && sp.end <= pcln.Addr+pcln.Size {
			named += sp.end - sp.start
			kinds[sp.kind] = true
		}
	}
	if named < pcln.Size*95/100 {
		t.Errorf("pclntab: %d of %d bytes named", named, pcln.Size)
	}
	for _, k := range []string{kFuncTab, kPCTab, kNames} {
		if !kinds[k] {
			t.Errorf("pclntab: no %s span", k)
		}
	}

	r, err := attribute(cmd.Process.Pid, bm)
	if err != nil {
		t.Fatal(err)
	}
	var exeBytes float64
	for _, v := range r.exe {
		exeBytes += v
	}
	if exeBytes <= 0 || r.exe[[2]string{"runtime", kText}] <= 0 {
		t.Errorf("no resident page of the binary, or none of the runtime's code: %v", r.exe)
	}
	// The binary's file pages are at most what the kernel counts as
	// file-backed (that also holds other files' pages).
	if int64(exeBytes) > r.file {
		t.Errorf("binary's pages %d > file-backed %d", int64(exeBytes), r.file)
	}
	if r.anonBy[regionArena] <= 0 {
		t.Errorf("no heap arena found: %v", r.anonBy)
	}
	if out := r.markdown(5); !strings.Contains(out, "| Go runtime |") || !strings.Contains(out, "**binary, in all**") {
		t.Errorf("markdown lacks the runtime's group or the total:\n%s", out)
	}
}

func TestFaultAround(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, make([]byte, 9<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := faultAround(path)
	if err != nil {
		t.Fatal(err)
	}
	// Each touched page is mapped, and maybe others around it (how many
	// depends on the kernel and on the size of the page cache's folios).
	rows := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[2:] {
		f := strings.Split(line, "|")
		var per float64
		if _, err := fmt.Sscanf(strings.TrimSpace(f[4]), "%g", &per); err != nil || per < 1 {
			t.Errorf("row %q: fewer pages mapped than touched", line)
		}
		rows++
	}
	if rows != 4 {
		t.Errorf("%d rows; want 4:\n%s", rows, out)
	}
	if _, err := faultAround(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}
