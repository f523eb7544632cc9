package main

import (
	"bufio"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// The resident attribution: which parts of a running Go program's binary
// are in its VmRSS, by Go package and by kind of data, and what its
// anonymous memory is. A page of the binary is resident when the
// process's page table maps it (the present bit of /proc/PID/pagemap);
// its 4 KiB are shared out among what the binary holds in it in
// proportion to their bytes (which of them was touched cannot be known).

const pageSize = 4096

// Kinds of a binary's bytes.
const (
	kText     = "text"          // machine code
	kFuncTab  = "pclntab funcs" // the function table: one entry per function
	kPCTab    = "pclntab pc"    // pc-value tables (stack size, file, line, stack maps' indexes)
	kNames    = "pclntab names" // function names, files, compilation units
	kFuncData = "funcdata"      // go:func.*: stack maps and other per-function data
	kRodata   = "rodata"        // types, strings, other read-only data
	kData     = "data"          // initialised data (file-backed until written)
	kOther    = "other"         // ELF headers, padding, anything else
)

// span is bytes [start, end) of the binary owned by one package.
type span struct {
	start, end uint64
	pkg, kind  string
}

// binaryMap knows what every address of a binary holds.
type binaryMap struct {
	spans    []span // sorted by start, not overlapping
	sections []*elf.Section
	strings  uint64 // go:string.*: where the types end and the strings start in .rodata
}

// gapLabel names what lies at addr, of kind, outside every symbol.
func (m *binaryMap) gapLabel(addr uint64, kind string) string {
	switch {
	case kind == kText:
		return "(text: padding between functions)"
	case kind == kRodata && m.strings != 0 && addr >= m.strings:
		return "(rodata: strings)"
	case kind == kRodata:
		return "(rodata: types)"
	}
	return "(" + kind + ": unnamed)"
}

// loadBinaryMap reads a Go ELF binary's symbol table and function table.
// The binary must have its symbol table (built without -s); the function
// table alone, which a stripped binary keeps, names the functions, but
// not the data.
func loadBinaryMap(path string) (*binaryMap, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%s: %w (build without -ldflags=-s)", path, err)
	}
	m := &binaryMap{}
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Addr != 0 {
			m.sections = append(m.sections, s)
		}
	}
	byName := map[string]elf.Symbol{}
	var spans []span
	for _, s := range syms {
		byName[s.Name] = s
		if s.Size == 0 || s.Value == 0 {
			continue
		}
		sec := m.section(s.Value)
		if sec == nil || sec.Name == ".gopclntab" || s.Name == "go:func.*" {
			continue // described below, function by function
		}
		kind := kRodata
		switch {
		case sec.Flags&elf.SHF_EXECINSTR != 0:
			kind = kText
		case sec.Flags&elf.SHF_WRITE != 0:
			kind = kData
		}
		spans = append(spans, span{s.Value, s.Value + s.Size, symbolPackage(s.Name), kind})
	}
	pcln := f.Section(".gopclntab")
	text, gofunc := byName["runtime.text"], byName["go:func.*"]
	if pcln == nil || text.Value == 0 || gofunc.Value == 0 {
		return nil, fmt.Errorf("%s: no Go function table", path)
	}
	tab, err := pcln.Data()
	if err != nil {
		return nil, err
	}
	fs, err := funcSpans(tab, pcln.Addr, gofunc.Value, gofunc.Value+gofunc.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	spans = append(spans, fs...)
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	// Symbols may overlap (aliases): keep the first of each address.
	out := spans[:0]
	for _, s := range spans {
		if n := len(out); n > 0 && s.start < out[n-1].end {
			if s.end <= out[n-1].end {
				continue
			}
			s.start = out[n-1].end
		}
		out = append(out, s)
	}
	m.spans = out
	m.strings = byName["go:string.*"].Value
	return m, nil
}

func (m *binaryMap) section(addr uint64) *elf.Section {
	for _, s := range m.sections {
		if addr >= s.Addr && addr < s.Addr+s.Size {
			return s
		}
	}
	return nil
}

// funcSpans reads a Go 1.20+ pclntab at address base and shares it out
// among the packages of its functions: each function's table entry, name,
// pc-value tables and funcdata (in go:func.*, [gofunc, gofuncEnd)). The
// tables shared by all (file names, compilation units) go to "(pclntab)".
func funcSpans(tab []byte, base, gofunc, gofuncEnd uint64) ([]span, error) {
	le := binary.LittleEndian
	if len(tab) < 72 || le.Uint32(tab) < 0xfffffff1 || tab[7] != 8 {
		return nil, errors.New("unknown pclntab format")
	}
	nfunc := int(le.Uint64(tab[8:]))
	// Offsets of the function names, the compilation units (then the
	// file names), the pc-value tables and the function table.
	nameOff, cuOff, pcOff, funcOff := le.Uint64(tab[32:]), le.Uint64(tab[40:]), le.Uint64(tab[56:]), le.Uint64(tab[64:])
	if funcOff+uint64(nfunc+1)*8 > uint64(len(tab)) {
		return nil, errors.New("pclntab: short function table")
	}
	var spans []span
	add := func(start, end uint64, pkg, kind string) {
		if end > start {
			spans = append(spans, span{base + start, base + end, pkg, kind})
		}
	}
	// Streams of unknown length: each runs to the next one's start.
	type mark struct {
		off uint64
		pkg string
	}
	var names, pcs, fdata []mark
	add(0, nameOff, "(pclntab)", kNames)
	add(cuOff, pcOff, "(pclntab)", kNames)
	add(funcOff, funcOff+uint64(nfunc+1)*8, "(pclntab)", kFuncTab)
	for i := 0; i < nfunc; i++ {
		fo := funcOff + uint64(le.Uint32(tab[funcOff+uint64(i)*8+4:]))
		if fo+44 > uint64(len(tab)) {
			return nil, errors.New("pclntab: function out of range")
		}
		fn := tab[fo:]
		no := nameOff + uint64(le.Uint32(fn[4:]))
		end := no
		for end < uint64(len(tab)) && tab[end] != 0 {
			end++
		}
		pkg := symbolPackage(string(tab[no:end]))
		names = append(names, mark{no, pkg})
		npcdata, nfuncdata := uint64(le.Uint32(fn[28:])), uint64(fn[43])
		add(fo, fo+44+4*npcdata+4*nfuncdata, pkg, kFuncTab)
		for _, o := range []uint64{16, 20, 24} { // pcsp, pcfile, pcln
			if v := le.Uint32(fn[o:]); v != 0 {
				pcs = append(pcs, mark{pcOff + uint64(v), pkg})
			}
		}
		for j := uint64(0); j < npcdata; j++ {
			if v := le.Uint32(fn[44+4*j:]); v != 0 {
				pcs = append(pcs, mark{pcOff + uint64(v), pkg})
			}
		}
		for j := uint64(0); j < nfuncdata; j++ {
			if v := le.Uint32(fn[44+4*npcdata+4*j:]); v != ^uint32(0) {
				fdata = append(fdata, mark{gofunc + uint64(v), pkg})
			}
		}
	}
	runs := func(ms []mark, limit uint64, kind string, abs bool) {
		slices.SortFunc(ms, func(a, b mark) int { return cmp.Compare(a.off, b.off) })
		for i, m := range ms {
			if i > 0 && m.off == ms[i-1].off {
				continue // shared with the previous function
			}
			next := limit
			for k := i + 1; k < len(ms); k++ {
				if ms[k].off > m.off {
					next = ms[k].off
					break
				}
			}
			if abs {
				spans = append(spans, span{m.off, next, m.pkg, kind})
			} else {
				add(m.off, next, m.pkg, kind)
			}
		}
	}
	runs(names, cuOff, kNames, false)
	runs(pcs, funcOff, kPCTab, false)
	runs(fdata, gofuncEnd, kFuncData, true)
	return spans, nil
}

// symbolPackage is the Go package of a symbol or function name:
// "net/http.(*Transport).dialConn" is net/http, "gopkg.in/yaml.v2.Marshal"
// is gopkg.in/yaml.v2, "type:*net/http.Request" is net/http.
func symbolPackage(name string) string {
	name = strings.TrimPrefix(name, "type:")
	name = strings.TrimLeft(name, "*[]")
	if strings.HasPrefix(name, "go:") {
		return name
	}
	if i := strings.IndexAny(name, "[("); i > 0 {
		name = name[:i]
	}
	slash := strings.LastIndexByte(name, '/')
	// The linker writes a dot in the last element of a package path as
	// %2e: gopkg.in/yaml%2ev2.Marshal.
	dot := strings.IndexByte(name[slash+1:], '.')
	if dot >= 0 {
		name = name[:slash+1+dot]
	}
	return strings.ReplaceAll(name, "%2e", ".")
}

// mapping is one line of /proc/PID/smaps with the fields used here.
type mapping struct {
	start, end uint64
	perms      string
	offset     uint64
	path       string
	rss, anon  int64 // bytes
}

func readSmaps(pid int) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseSmaps(f)
}

func parseSmaps(r io.Reader) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fs[0], "-"); ok && len(fs) >= 5 {
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			off, err3 := strconv.ParseUint(fs[2], 16, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				return nil, fmt.Errorf("smaps: bad mapping line %q", sc.Text())
			}
			out = append(out, mapping{start: start, end: end, perms: fs[1], offset: off, path: strings.Join(fs[5:], " ")})
			continue
		}
		if len(out) == 0 || len(fs) < 3 || fs[2] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil {
			continue
		}
		switch fs[0] {
		case "Rss:":
			out[len(out)-1].rss = n << 10
		case "Anonymous:":
			out[len(out)-1].anon = n << 10
		}
	}
	return out, sc.Err()
}

// presentPages returns, for each page of [start, end), whether the
// process's page table maps it.
func presentPages(pagemap *os.File, start, end uint64) ([]bool, error) {
	n := (end - start) / pageSize
	buf := make([]byte, n*8)
	if _, err := pagemap.ReadAt(buf, int64(start/pageSize*8)); err != nil {
		return nil, fmt.Errorf("pagemap: %w", err)
	}
	out := make([]bool, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(buf[i*8:])&(1<<63) != 0
	}
	return out, nil
}

// residency is what one process keeps resident.
type residency struct {
	rss, anon, file int64                 // VmRSS, RssAnon, RssFile
	exe             map[[2]string]float64 // bytes of the binary by {package, kind}
	exeAnon         int64                 // pages of the binary's mappings no longer the file's (written data)
	anonBy          map[string]int64      // anonymous bytes by region
	anonMappings    map[string]int        // mappings by region
	other           map[string]int64      // other file-backed bytes by path
	metadata        []mapping             // the mappings of "other anonymous"
}

const regionArena = "Go heap arenas (heap objects, goroutine and thread stacks)"

// arenaSize is the size of a Go heap arena on 64-bit Linux: the runtime
// reserves it whole (PROT_NONE) and maps its used part read-write. The
// heap, goroutine stacks and the stacks of the runtime's threads live
// there.
const arenaSize = 64 << 20

// arenaRanges finds the Go heap arenas among a process's mappings: 64 MiB
// aligned ranges that anonymous mappings cover end to end, that hold a
// read-write part, and whose first and last mappings start and end on
// the range's bounds (the runtime reserves an arena whole, as one
// mapping, and maps a part of it read-write as the heap grows). The
// runtime's other large reservations, the page allocator's summaries, are
// larger and do not end on such bounds. The heap's base address is
// randomised since Go 1.26, within the arena too, so it cannot be
// recognised by its address. A read-write mapping at a bound may have
// been merged with anonymous memory beside it.
func arenaRanges(maps []mapping) [][2]uint64 {
	var out [][2]uint64
	for i, m := range maps {
		if m.path != "" {
			continue
		}
		for b := (m.start + arenaSize - 1) &^ (arenaSize - 1); b < m.end; b += arenaSize {
			if b != m.start && !strings.HasPrefix(m.perms, "rw") {
				continue
			}
			end := b + arenaSize
			last, rw := m, strings.HasPrefix(m.perms, "rw")
			for j := i + 1; j < len(maps) && last.end < end && maps[j].start == last.end && maps[j].path == ""; j++ {
				last = maps[j]
				rw = rw || strings.HasPrefix(last.perms, "rw")
			}
			if rw && (last.end == end || last.end > end && strings.HasPrefix(last.perms, "rw")) && (len(out) == 0 || out[len(out)-1][1] <= b) {
				out = append(out, [2]uint64{b, end})
			}
		}
	}
	return out
}

// attribute measures process pid, whose executable is described by bm.
func attribute(pid int, bm *binaryMap) (*residency, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil, err
	}
	st, err := readStatus(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	maps, err := readSmaps(pid)
	if err != nil {
		return nil, err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	r := &residency{
		// RssFile leaves out the pages of a tmpfs file (RssShmem), where
		// the bench puts its binaries.
		rss: st["VmRSS"], anon: st["RssAnon"], file: st["VmRSS"] - st["RssAnon"],
		exe: map[[2]string]float64{}, anonBy: map[string]int64{}, anonMappings: map[string]int{}, other: map[string]int64{},
	}
	arenas := arenaRanges(maps)
	// arenaBytes is how much of m's resident memory lies in a heap arena.
	arenaBytes := func(m mapping) (int64, error) {
		var n int64
		for _, a := range arenas {
			lo, hi := max(a[0], m.start), min(a[1], m.end)
			if lo >= hi {
				continue
			}
			present, err := presentPages(pm, lo, hi)
			if err != nil {
				return 0, err
			}
			for _, p := range present {
				if p {
					n += pageSize
				}
			}
		}
		return n, nil
	}
	for _, m := range maps {
		switch {
		case m.path == exe:
			r.exeAnon += m.anon
			if m.rss-m.anon <= 0 {
				continue
			}
			present, err := presentPages(pm, m.start, m.end)
			if err != nil {
				return nil, err
			}
			for i, p := range present {
				if p {
					bm.charge(r.exe, m.start+uint64(i)*pageSize)
				}
			}
			if m.anon > 0 {
				// Written pages of the data segment: anonymous now, and
				// charged above as file pages: take them back out.
				r.exe[[2]string{"(written data)", kData}] -= float64(m.anon)
			}
		case m.anon > 0 || m.rss > 0 && !strings.HasPrefix(m.path, "/"):
			region := "other anonymous (runtime metadata: spans, GC bitmaps, page summaries)"
			if m.path == "" && !isBSS(m, maps, exe) {
				in, err := arenaBytes(m)
				if err != nil {
					return nil, err
				}
				if in > 0 {
					r.anonBy[regionArena] += in
					r.anonMappings[regionArena]++
				}
				if m.rss -= in; m.rss <= 0 {
					continue
				}
			}
			switch {
			case m.path == "" && isBSS(m, maps, exe):
				region = "binary's .bss/.noptrbss"
			case m.path != "":
				region = m.path
			}
			if strings.HasPrefix(region, "other anonymous") {
				r.metadata = append(r.metadata, m)
			}
			r.anonBy[region] += m.rss
			r.anonMappings[region]++
		default:
			r.other[m.path] += m.rss
		}
	}
	return r, nil
}

// isBSS says whether anonymous mapping m directly follows a mapping of the
// executable (the kernel maps the zero-filled data there).
func isBSS(m mapping, maps []mapping, exe string) bool {
	for _, p := range maps {
		if p.path == exe && p.end == m.start {
			return true
		}
	}
	return false
}

// find returns the span holding addr.
func (bm *binaryMap) find(addr uint64) (span, bool) {
	i, _ := slices.BinarySearchFunc(bm.spans, addr, func(s span, a uint64) int { return cmp.Compare(s.end, a+1) })
	if i < len(bm.spans) && bm.spans[i].start <= addr {
		return bm.spans[i], true
	}
	return span{}, false
}

// charge shares out the page at addr among the spans it holds.
func (bm *binaryMap) charge(into map[[2]string]float64, addr uint64) {
	end := addr + pageSize
	covered := uint64(0)
	i, _ := slices.BinarySearchFunc(bm.spans, addr, func(s span, a uint64) int { return cmp.Compare(s.end, a+1) })
	for ; i < len(bm.spans) && bm.spans[i].start < end; i++ {
		s := bm.spans[i]
		lo, hi := max(s.start, addr), min(s.end, end)
		if hi > lo {
			into[[2]string{s.pkg, s.kind}] += float64(hi - lo)
			covered += hi - lo
		}
	}
	if covered < pageSize {
		kind := kOther
		if sec := bm.section(addr); sec != nil {
			switch {
			case sec.Flags&elf.SHF_EXECINSTR != 0:
				kind = kText
			case sec.Flags&elf.SHF_WRITE != 0:
				kind = kData
			case sec.Name == ".gopclntab":
				kind = kNames
			default:
				kind = kRodata
			}
		}
		into[[2]string{bm.gapLabel(addr, kind), kind}] += float64(pageSize - covered)
	}
}

// faultAround measures how many pages of file the kernel maps per page a
// process touches, after madvise with each advice: the file is mapped
// private and read-only as a binary's code is, its mapped pages dropped
// (MADV_DONTNEED), then 32 pages 256 KiB apart are read.
func faultAround(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	const touches, stride = 32, 256 << 10
	if fi.Size() < touches*stride+pageSize {
		return "", fmt.Errorf("%s: want a file of at least %d bytes", path, touches*stride+pageSize)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		return "", err
	}
	defer syscall.Munmap(b)
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return "", err
	}
	defer pm.Close()
	var sum byte
	for i := 0; i < len(b); i += pageSize { // into the page cache
		sum += b[i]
	}
	start := uint64(uintptr(unsafe.Pointer(&b[0])))
	var out strings.Builder
	fmt.Fprintf(&out, "| advice | pages touched | pages mapped | per touch |\n|---|---|---|---|\n")
	for _, a := range []struct {
		name   string
		advice int
	}{{"none", -1}, {"MADV_RANDOM", syscall.MADV_RANDOM}, {"MADV_SEQUENTIAL", syscall.MADV_SEQUENTIAL}, {"MADV_NORMAL", syscall.MADV_NORMAL}} {
		if err := syscall.Madvise(b, syscall.MADV_DONTNEED); err != nil {
			return "", err
		}
		if a.advice >= 0 {
			if err := syscall.Madvise(b, a.advice); err != nil {
				return "", err
			}
		}
		for i := 0; i < touches; i++ {
			sum += b[stride*(i+1)]
		}
		present, err := presentPages(pm, start, start+uint64(len(b))&^(pageSize-1))
		if err != nil {
			return "", err
		}
		n := 0
		for _, p := range present {
			if p {
				n++
			}
		}
		fmt.Fprintf(&out, "| %s | %d | %d | %.1f |\n", a.name, touches, n, float64(n)/touches)
	}
	runtime.KeepAlive(sum) // the reads above must happen
	return out.String(), nil
}
