package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// binaries are the paths of the programs under test.
type binaries struct {
	init, renew, revoke string // podlease, built as `make build` does
	floor               string // cmd/bench/floor, built with the same flags
	floorHTTP           string // cmd/bench/floorhttp, likewise
	vault               string // the vault binary Agent runs from
	version             string // podlease version stamped into the binaries
}

// build builds the three podlease binaries exactly as the Makefile's
// build target does, and the floor with the same flags.
func build(ctx context.Context, root, dir string) (binaries, error) {
	return buildWith(ctx, root, dir, "-s -w")
}

// buildWith is build with the linker's flags strip ("-s -w", or "" to keep
// the symbol table and DWARF, which lie outside the loaded segments).
func buildWith(ctx context.Context, root, dir, strip string) (binaries, error) {
	b := binaries{version: gitDescribe(ctx, root)}
	ldflags := strings.TrimSpace(strip + " -X github.com/podlease/podlease/internal/version.Version=" + b.version)
	for _, t := range []struct {
		dst *string
		pkg string
		dir string
	}{
		{&b.init, "./cmd/vault-init", root},
		{&b.renew, "./cmd/vault-renew", root},
		{&b.revoke, "./cmd/vault-revoke", root},
		{&b.floor, "./cmd/bench/floor", filepath.Join(root, "e2e")},
		{&b.floorHTTP, "./cmd/bench/floorhttp", filepath.Join(root, "e2e")},
	} {
		out := filepath.Join(dir, filepath.Base(t.pkg))
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, t.pkg)
		cmd.Dir = t.dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("build %s: %v\n%s", t.pkg, err, o)
		}
		*t.dst = out
	}
	return b, nil
}

func gitDescribe(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// machine describes where the numbers were taken.
type machine struct {
	nproc                 int
	cpu                   string
	memTotal              string
	goVersion             string
	vaultVersion          string
	podlease              string
	kernel                string
	loadBefore, loadAfter string
	gnuTime               string // path of GNU time, or ""
	date                  time.Time
}

func describeMachine(ctx context.Context, root, vaultBin string) machine {
	m := machine{
		nproc:    runtime.NumCPU(),
		cpu:      procField("/proc/cpuinfo", "model name"),
		memTotal: memTotal(),
		podlease: gitDescribe(ctx, root),
		date:     time.Now().UTC(),
	}
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.goVersion = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	}
	if out, err := exec.CommandContext(ctx, vaultBin, "version").Output(); err == nil {
		// A build from source without a build date prints the current
		// time as "built ...": drop it.
		v, _, _ := strings.Cut(strings.TrimSpace(string(out)), ", built")
		m.vaultVersion = v
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc
// file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}

func memTotal() string {
	var kb int64
	if _, err := fmt.Sscanf(procField("/proc/meminfo", "MemTotal"), "%d kB", &kb); err != nil {
		return "?"
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// binarySizes are file sizes in bytes.
type binarySizes struct {
	init, renew, revoke, floor int64
	vault                      int64
	vaultStripped              int64 // 0 if not measured
	strippedNote               string
}

// distrolessStatic is the approximate size of gcr.io/distroless/static
// (CA certificates, tzdata, /etc/passwd): the base of podlease's image.
const distrolessStatic = 2 << 20

func sizes(b binaries, work string, skipStrip bool) (binarySizes, error) {
	var s binarySizes
	for _, f := range []struct {
		dst  *int64
		path string
	}{{&s.init, b.init}, {&s.renew, b.renew}, {&s.revoke, b.revoke}, {&s.floor, b.floor}, {&s.vault, b.vault}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			return s, err
		}
		*f.dst = fi.Size()
	}
	if skipStrip {
		s.strippedNote = "not measured (--skip-strip)"
		return s, nil
	}
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		s.strippedNote = "not measured (no objcopy)"
		return s, nil
	}
	// A copy on disk, not in /dev/shm: the binary is half a gigabyte.
	tmp, err := os.MkdirTemp("", "podlease-bench-strip-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(tmp)
	cp := filepath.Join(tmp, "vault")
	if err := testbed.CopyFile(cp, b.vault); err != nil {
		return s, err
	}
	if out, err := exec.Command(objcopy, "--strip-all", cp).CombinedOutput(); err != nil {
		s.strippedNote = fmt.Sprintf("not measured (objcopy: %v: %s)", err, strings.TrimSpace(string(out)))
		return s, nil
	}
	fi, err := os.Stat(cp)
	if err != nil {
		return s, err
	}
	s.vaultStripped = fi.Size()
	return s, nil
}
