package main

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// releaseStartupPages unmaps from the process the pages of its own binary
// (code and read-only data) that it has mapped so far, most of them for
// start-up only: package initialisation, flag parsing, the first requests.
// The kernel maps a binary's pages in 64 KiB runs around each one touched,
// and counts every mapped page in VmRSS for as long as the process lives.
// Pages used again come back from the page cache at the cost of a minor
// fault; the file's pages stay in the cache, shared with every other
// process running the binary. Only clean, read-only mappings of the
// executable are released: a page written since it was mapped (a
// relocation, in a position-independent build) would be lost.
func releaseStartupPages() {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return
	}
	defer f.Close()
	for _, r := range cleanExeMappings(f, exe) {
		// Best effort: an error leaves the pages mapped, which is harmless.
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, r.start, r.end-r.start, syscall.MADV_DONTNEED)
	}
}

// addrRange is a mapping's [start, end).
type addrRange struct{ start, end uintptr }

// cleanExeMappings reads /proc/PID/smaps and returns the mappings of file
// exe that are neither writable nor hold a page that is no longer the
// file's (Anonymous above 0 kB).
func cleanExeMappings(smaps io.Reader, exe string) []addrRange {
	var out []addrRange
	var cur *addrRange
	clean := false
	flush := func() {
		if cur != nil && clean {
			out = append(out, *cur)
		}
		cur = nil
	}
	sc := bufio.NewScanner(smaps)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && len(fields) >= 5 {
			// A mapping's header: address perms offset dev inode [path].
			flush()
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			path := strings.Join(fields[5:], " ")
			if err1 == nil && err2 == nil && end > start && path == exe && len(fields[1]) == 4 && fields[1][1] != 'w' {
				cur = &addrRange{uintptr(start), uintptr(end)}
				clean = false
			}
			continue
		}
		if cur != nil && fields[0] == "Anonymous:" && len(fields) >= 2 {
			clean = fields[1] == "0"
		}
	}
	flush()
	if sc.Err() != nil {
		return nil
	}
	return out
}
