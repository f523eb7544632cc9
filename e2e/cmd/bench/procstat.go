package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procSample is one look at a running process.
type procSample struct {
	at       time.Time
	cpu      time.Duration // utime + stime, all threads (10 ms ticks)
	run      time.Duration // time on CPU from schedstat, live threads (ns)
	rss, hwm int64         // VmRSS, VmHWM in bytes
	anon     int64         // RssAnon: heap, stacks, runtime (the rest of VmRSS is mostly the binary's mapped pages)
	ctxsw    int64         // voluntary + involuntary context switches, all threads
	threads  int
}

func sampleProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces; fields after ")" are
	// fixed: state is field 3, utime field 14, stime field 15.
	str := string(b)
	i := strings.LastIndexByte(str, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(str[i+1:])
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = time.Duration(ut+st) * clockTick

	status, err := readStatus(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	s.rss = status["VmRSS"]
	s.hwm = status["VmHWM"]
	s.anon = status["RssAnon"]
	s.threads = int(status["Threads"])
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		ts, err := readStatus(filepath.Join(t, "status"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		s.ctxsw += ts["voluntary_ctxt_switches"] + ts["nonvoluntary_ctxt_switches"]
		if b, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				s.run += time.Duration(ns)
			}
		}
	}
	return s, nil
}

// readStatus parses the numeric fields of a /proc status file; sizes ("kB")
// come back in bytes.
func readStatus(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fs) > 1 && fs[1] == "kB" {
			n *= 1024
		}
		m[k] = n
	}
	return m, sc.Err()
}
