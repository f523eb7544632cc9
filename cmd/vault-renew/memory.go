package main

import (
	"runtime"
	"runtime/debug"
	"time"
)

// The sidecar lives as long as its pod and does a few small requests an
// hour, so its Go runtime defaults favour memory over throughput. Each is
// overridden by the Go runtime's own environment variable.
const (
	// defaultMaxProcs is one P: one loop does the Vault work, so more Ps
	// only add per-P caches, GC workers and threads (one per core on a
	// node without a CPU limit). GOMAXPROCS overrides it.
	defaultMaxProcs = 1
	// defaultMemoryLimit is a soft limit on the Go runtime's memory: near
	// it the garbage collector runs and unused heap pages go back to the
	// kernel, where with GOGC=100 alone the heap grows to 4 MiB before
	// the first collection and the runtime keeps the pages. What the
	// runtime counts against the limit also holds its own structures as
	// mapped, resident or not (with Go 1.26 and one P about 4.7 MiB, 1.4
	// MiB of it a profiling hash table it maps at start and barely
	// touches), so the limit must leave room above them for the live heap:
	// at 6 MiB it did not, the heap goal fell to 0 and the collector ran
	// at nearly every allocation (500-600 times in 5 minutes of renewals,
	// four times the CPU). Between rounds of work vault-renew gives free
	// memory back itself (the loop's settle), so the limit only bounds a
	// long round: at 8 MiB, 20 collections in those 5 minutes and no more
	// resident memory than 6 MiB left (see the Memory section of
	// docs/renew.md). It is sized for one P: with GOMAXPROCS set it is
	// not applied, since more Ps need more of the runtime's memory and a
	// limit too close to that makes the collector run without pause.
	// GOMEMLIMIT overrides it ("off" for none), and vault-renew's
	// --memory-limit overrides both.
	defaultMemoryLimit = 8 << 20
	// startupOver is when start-up is surely done: flags, state, the
	// first lookup and the listener take well under a second.
	startupOver = 30 * time.Second
)

// setMemoryDefaults applies the defaults above unless the environment
// sets the variable (the memory limit also not when it sets GOMAXPROCS).
func setMemoryDefaults(getenv func(string) string) {
	if getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(defaultMaxProcs)
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}
