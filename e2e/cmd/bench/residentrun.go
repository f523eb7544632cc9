package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// parseVariant reads --variant LABEL=KIND:PATH[:ENV=VALUE...], KIND being
// renew (run as vault-renew, after vault-init) or floor (run as the floor
// program with -serve).
func parseVariant(s string) (variant, error) {
	label, rest, ok := strings.Cut(s, "=")
	parts := strings.Split(rest, ":")
	if !ok || label == "" || len(parts) < 2 || parts[1] == "" {
		return variant{}, fmt.Errorf("--variant %q: want LABEL=renew:PATH[:ENV=VALUE...] or LABEL=floor:PATH", s)
	}
	v := variant{label: label, bin: parts[1], env: parts[2:]}
	switch parts[0] {
	case "renew":
		v.kind = sRenew
	case "floor":
		v.kind = sFloor
	default:
		return variant{}, fmt.Errorf("--variant %q: kind %q: want renew or floor", s, parts[0])
	}
	if _, err := os.Stat(v.bin); err != nil {
		return variant{}, fmt.Errorf("--variant %q: %w", s, err)
	}
	return v, nil
}

// residentRun starts vault-renew renewing at cfg.ttl, the same with the
// collector's trace on (for the heap's split), the floor and floorhttp
// kept running, and every --variant, all at once; after the window it
// attributes each one's resident memory and prints the tables.
func (b *bench) residentRun(ctx context.Context) (string, error) {
	c := b.cfg
	maxTTL := c.window + 10*time.Minute
	if err := b.bed.CreateDBRole(benchRole, c.ttl, maxTTL); err != nil {
		return "", err
	}
	if err := b.bed.CreateK8sRole(benchRole, c.ttl, maxTTL, testbed.Policy); err != nil {
		return "", err
	}
	vs := append([]variant{
		{label: sRenew, kind: sRenew},
		{label: sRenew + " GODEBUG=gctrace=1", kind: sRenew, env: []string{"GODEBUG=gctrace=1"}},
		{label: sRenew + " idle", kind: sRenew},
		{label: "floor", kind: sFloor},
		{label: "floorhttp", kind: sFloor, bin: b.bins.floorHTTP},
	}, c.variants...)
	var all []*sidecar
	defer func() {
		for _, s := range all {
			s.stop()
		}
		_ = b.revokePrefix(context.Background(), "database/creds/")
	}()
	for _, v := range vs {
		role, ttl := benchRole, c.ttl
		if v.kind == sFloor || strings.HasSuffix(v.label, " idle") {
			role, ttl = testbed.Role, time.Hour
		}
		s, err := b.startVariant(ctx, v, role, ttl)
		if s != nil {
			all = append(all, s)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", v.label, err)
		}
	}
	if err := b.audit.mark(); err != nil {
		return "", err
	}
	gcBefore := map[*sidecar]int{}
	for _, s := range all {
		var err error
		if s.first, err = sampleProc(s.cmd.Process.Pid); err != nil {
			return "", err
		}
		gcBefore[s] = strings.Count(s.out.String(), "\ngc ")
	}
	logf("resident: %d processes, window %s", len(all), c.window)
	end := time.Now().Add(c.window)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
		for _, s := range all {
			if s.exited() {
				return "", fmt.Errorf("%s exited during the window: %v\n%s", s.name, s.cmd.ProcessState, tailLines(s.out.String(), 15))
			}
		}
	}
	es, err := b.audit.next()
	if err != nil {
		return "", err
	}
	byAccessor := map[string]*sidecar{}
	for _, s := range all {
		if s.accessor != "" {
			byAccessor[s.accessor] = s
		}
	}
	for _, e := range es {
		if s := byAccessor[e.Auth.Accessor]; s != nil && e.Type == "request" && renewalKind(e.Request.Path) != "" {
			s.renewals++
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "## Resident memory, attributed\n\nAfter a %s window, renewing processes at a %s lease and token TTL; binaries built as `make build` does but keeping the symbol table (its sections are not loaded: the mapped segments are the same as the stripped build's).\n\n", c.window, c.ttl)
	out.WriteString("| process | VmRSS | anon | file | binary: text | pclntab | funcdata | rodata | data | CPU in window | renewals |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	var details strings.Builder
	for _, s := range all {
		pid := s.cmd.Process.Pid
		smp, err := sampleProc(pid)
		if err != nil {
			return "", err
		}
		r, _, err := attributeProc(pid, "")
		if err != nil {
			return "", err
		}
		byKind := r.byKind()
		fmt.Fprintf(&out, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", s.name, kib(r.rss), kib(r.anon), kib(r.file),
			kib(int64(byKind[kText])), kib(int64(byKind[kFuncTab]+byKind[kPCTab]+byKind[kNames])), kib(int64(byKind[kFuncData])),
			kib(int64(byKind[kRodata]+byKind[kOther])), kib(int64(byKind[kData])), (smp.cpu - s.first.cpu).String(), s.renewals)
		fmt.Fprintf(&details, "### %s\n\n%s\n", s.name, r.markdown(25))
		if strings.Contains(s.name, "gctrace") {
			fmt.Fprintf(&details, "Collections in the window: %d. The last: `%s`\n\n", strings.Count(s.out.String(), "\ngc ")-gcBefore[s], lastLineWith(s.out.String(), "gc "))
		}
	}
	out.WriteString("\nKiB. The binary's columns are its pages in VmRSS (file-backed, shared by every process running it), by kind: pclntab is the function table with its pc-value tables and names; funcdata is go:func.* (stack maps); rodata is types, strings and other read-only data.\n\n")
	out.WriteString(details.String())
	return out.String(), nil
}

// symbolizeAddrs reads addresses (hexadecimal, one a line, e.g. the
// faulting addresses `perf record -e page-faults -d` recorded) and counts
// them by package and kind of the binary symbols describes, and by
// symbol for code.
func symbolizeAddrs(r io.Reader, symbols string) (string, error) {
	bm, err := loadBinaryMap(symbols)
	if err != nil {
		return "", err
	}
	byPkg, byKind := map[[2]string]int{}, map[string]int{}
	n := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		a, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "0x"), 16, 64)
		if err != nil {
			continue
		}
		n++
		sp, ok := bm.find(a)
		if !ok {
			byKind["(outside the binary's symbols)"]++
			continue
		}
		byPkg[[2]string{sp.pkg, sp.kind}]++
		byKind[sp.kind]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d addresses\n\n| kind | count |\n|---|---|\n", n)
	for _, k := range slices.Sorted(maps.Keys(byKind)) {
		fmt.Fprintf(&b, "| %s | %d |\n", k, byKind[k])
	}
	keys := slices.SortedFunc(maps.Keys(byPkg), func(x, y [2]string) int { return byPkg[y] - byPkg[x] })
	b.WriteString("\n| package | kind | count |\n|---|---|---|\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %s | %d |\n", k[0], k[1], byPkg[k])
	}
	return b.String(), sc.Err()
}

// attributePID prints the attribution of a running process.
func attributePID(pid int, symbols string) (string, error) {
	r, symbols, err := attributeProc(pid, symbols)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("## PID %d (%s)\n\nVmRSS %s, anonymous %s, file-backed %s (KiB)\n\n%s", pid, filepath.Base(symbols), kib(r.rss), kib(r.anon), kib(r.file), r.markdown(40)), nil
}

// attributeProc attributes the resident memory of process pid with the
// symbols of binary symbols (empty: the binary the process runs), and
// returns the binary it used.
func attributeProc(pid int, symbols string) (*residency, string, error) {
	if symbols == "" {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			return nil, "", err
		}
		symbols = exe
	}
	bm, err := loadBinaryMap(symbols)
	if err != nil {
		return nil, "", err
	}
	r, err := attribute(pid, bm)
	return r, symbols, err
}

func (r *residency) byKind() map[string]float64 {
	m := map[string]float64{}
	for k, v := range r.exe {
		m[k[1]] += v
	}
	return m
}

// markdown is the residency as tables: the binary's resident pages by
// package (top packages, the rest summed) and the anonymous memory by
// region.
func (r *residency) markdown(top int) string {
	kinds := []string{kText, kFuncTab, kPCTab, kNames, kFuncData, kRodata, kData, kOther}
	byPkg := map[string]map[string]float64{}
	for k, v := range r.exe {
		if byPkg[k[0]] == nil {
			byPkg[k[0]] = map[string]float64{}
		}
		byPkg[k[0]][k[1]] += v
	}
	sum := func(m map[string]float64) (t float64) {
		for _, v := range m {
			t += v
		}
		return t
	}
	pkgs := slices.SortedFunc(maps.Keys(byPkg), func(a, b string) int {
		if d := sum(byPkg[b]) - sum(byPkg[a]); d != 0 {
			if d > 0 {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})
	var b strings.Builder
	groups := map[string]map[string]float64{}
	for p, m := range byPkg {
		g := packageGroup(p)
		if groups[g] == nil {
			groups[g] = map[string]float64{}
		}
		for k, v := range m {
			groups[g][k] += v
		}
	}
	b.WriteString("| group | total | " + strings.Join(kinds, " | ") + " |\n|---|---|" + strings.Repeat("---|", len(kinds)) + "\n")
	for _, g := range groupOrder {
		if m := groups[g]; m != nil {
			fmt.Fprintf(&b, "| %s | %s |", g, kib(int64(sum(m))))
			for _, k := range kinds {
				fmt.Fprintf(&b, " %s |", kib(int64(m[k])))
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
	b.WriteString("| package | total | " + strings.Join(kinds, " | ") + " |\n|---|---|" + strings.Repeat("---|", len(kinds)) + "\n")
	row := func(name string, m map[string]float64) {
		fmt.Fprintf(&b, "| %s | %s |", name, kib(int64(sum(m))))
		for _, k := range kinds {
			fmt.Fprintf(&b, " %s |", kib(int64(m[k])))
		}
		b.WriteString("\n")
	}
	rest, total := map[string]float64{}, map[string]float64{}
	for i, p := range pkgs {
		for k, v := range byPkg[p] {
			total[k] += v
			if i >= top {
				rest[k] += v
			}
		}
		if i < top {
			row(p, byPkg[p])
		}
	}
	if len(pkgs) > top {
		row(fmt.Sprintf("%d other packages", len(pkgs)-top), rest)
	}
	row("**binary, in all**", total)
	fmt.Fprintf(&b, "\nThe binary's mappings also hold %s KiB of written (now anonymous) data pages.\n\n| anonymous region | mappings | KiB |\n|---|---|---|\n", kib(r.exeAnon))
	for _, k := range slices.Sorted(maps.Keys(r.anonBy)) {
		fmt.Fprintf(&b, "| %s | %d | %s |\n", k, r.anonMappings[k], kib(r.anonBy[k]))
	}
	if len(r.metadata) > 0 {
		b.WriteString("\nOther anonymous mappings (size/resident KiB):")
		for _, m := range r.metadata {
			fmt.Fprintf(&b, " %s/%s", kib(int64(m.end-m.start)), kib(m.rss))
		}
		b.WriteString("\n\n")
	}
	for _, k := range slices.Sorted(maps.Keys(r.other)) {
		if r.other[k] > 0 {
			fmt.Fprintf(&b, "| (file) %s | | %s |\n", k, kib(r.other[k]))
		}
	}
	return b.String()
}

// Groups of packages in the summary, in its order.
var groupOrder = []string{
	"Go runtime", "net, net/http, crypto, TLS", "reflect, encoding/json, fmt, log/slog",
	"text/template", "Vault client library and its dependencies", "podlease", "rest of the standard library",
	"other modules", "types (unnamed rodata)", "strings (unnamed rodata)", "function table (shared part)", "padding, unnamed data",
}

// packageGroup puts a package in one of groupOrder.
func packageGroup(p string) string {
	has := func(prefixes ...string) bool {
		for _, x := range prefixes {
			if p == x || strings.HasPrefix(p, x+"/") || strings.HasPrefix(x, "*") && strings.HasPrefix(p, x[1:]) {
				return true
			}
		}
		return false
	}
	switch {
	case p == "(rodata: types)":
		return "types (unnamed rodata)"
	case p == "(rodata: strings)":
		return "strings (unnamed rodata)"
	case p == "(pclntab)":
		return "function table (shared part)"
	case strings.HasPrefix(p, "("):
		return "padding, unnamed data"
	case has("runtime", "internal/runtime", "internal/abi", "internal/cpu", "internal/bytealg", "internal/goarch", "internal/chacha8rand", "internal/sync", "sync", "sync/atomic", "internal/godebug", "internal/stringslite"):
		return "Go runtime"
	case has("net", "crypto", "vendor/golang.org/x/net", "vendor/golang.org/x/crypto", "vendor/golang.org/x/text", "internal/poll", "internal/nettrace", "internal/singleflight", "mime"):
		return "net, net/http, crypto, TLS"
	case has("reflect", "internal/reflectlite", "encoding/json", "fmt", "log/slog", "log", "internal/fmtsort"):
		return "reflect, encoding/json, fmt, log/slog"
	case has("text/template"):
		return "text/template"
	case has("github.com/hashicorp", "github.com/mitchellh", "github.com/go-jose", "github.com/ryanuber", "golang.org/x/time", "golang.org/x/net"):
		return "Vault client library and its dependencies"
	case has("github.com/podlease"):
		return "podlease"
	case !strings.Contains(strings.SplitN(p, "/", 2)[0], "."):
		return "rest of the standard library"
	}
	return "other modules"
}

func kib(n int64) string { return fmt.Sprintf("%d", (n+512)>>10) }

func lastLineWith(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return lines[i]
		}
	}
	return ""
}
