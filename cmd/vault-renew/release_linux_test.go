package main

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

const smapsSample = `00400000-00917000 r-xp 00000000 fe:00 9986528                            /bin/vault-renew
Size:               5212 kB
Rss:                4636 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00917000-00e7e000 r--p 00517000 fe:00 9986528                            /bin/vault-renew
Size:               5532 kB
Anonymous:             0 kB
00e7e000-00f04000 rw-p 00a7e000 fe:00 9986528                            /bin/vault-renew
Anonymous:           408 kB
00f04000-00f10000 r--p 00b04000 fe:00 9986528                            /bin/vault-renew
Anonymous:            16 kB
00f10000-00f20000 r--p 00000000 fe:00 1234                               /bin/vault-renew-other
Anonymous:             0 kB
7ffc25b5c000-7ffc25b7d000 rw-p 00000000 00:00 0                          [stack]
Anonymous:            16 kB
7f2e76d77000-7f2e76d79000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
`

func TestCleanExeMappings(t *testing.T) {
	t.Parallel()
	got := cleanExeMappings(strings.NewReader(smapsSample), "/bin/vault-renew")
	// The code and read-only data; not the writable data, not a read-only
	// mapping holding written (relocated) pages, not another file.
	want := []addrRange{{0x400000, 0x917000}, {0x917000, 0xe7e000}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cleanExeMappings = %#v; want %#v", got, want)
	}
	if got := cleanExeMappings(strings.NewReader(smapsSample), "/bin/other"); len(got) != 0 {
		t.Errorf("cleanExeMappings for a binary not mapped = %#v; want none", got)
	}
}

// TestReleaseStartupPages releases the test binary's own pages: its
// file-backed resident memory drops and the program runs on.
func TestReleaseStartupPages(t *testing.T) {
	before := rssFile(t)
	releaseStartupPages()
	after := rssFile(t)
	t.Logf("RssFile %d kB before, %d kB after", before, after)
	if after >= before {
		t.Errorf("RssFile %d kB after releasing, %d kB before; want less", after, before)
	}
	// Code and data used after the release still work.
	if got := cleanExeMappings(strings.NewReader(smapsSample), "/bin/vault-renew"); len(got) != 2 {
		t.Errorf("after the release: %d mappings; want 2", len(got))
	}
}

func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.Fields(v)[0])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
