package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestSetMemoryDefaults(t *testing.T) {
	// Not parallel: it changes the test process's runtime settings.
	limit, procs := debug.SetMemoryLimit(-1), runtime.GOMAXPROCS(0)
	t.Cleanup(func() {
		debug.SetMemoryLimit(limit)
		runtime.GOMAXPROCS(procs)
	})
	for _, tc := range []struct {
		name      string
		env       map[string]string
		wantLimit int64
		wantProcs int
	}{
		{"defaults", nil, defaultMemoryLimit, defaultMaxProcs},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "64MiB"}, math.MaxInt64, defaultMaxProcs},
		{"GOMAXPROCS set: no limit either", map[string]string{"GOMAXPROCS": "4"}, math.MaxInt64, 3},
		{"both set", map[string]string{"GOMAXPROCS": "4", "GOMEMLIMIT": "64MiB"}, math.MaxInt64, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// What the runtime read from the environment at start, here
			// no limit and 3 Ps.
			debug.SetMemoryLimit(math.MaxInt64)
			runtime.GOMAXPROCS(3)
			setMemoryDefaults(func(k string) string { return tc.env[k] })
			if got := debug.SetMemoryLimit(-1); got != tc.wantLimit {
				t.Errorf("memory limit = %d; want %d", got, tc.wantLimit)
			}
			if got := runtime.GOMAXPROCS(0); got != tc.wantProcs {
				t.Errorf("GOMAXPROCS = %d; want %d", got, tc.wantProcs)
			}
		})
	}
}
