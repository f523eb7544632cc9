package renew

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

func TestNotifyURLAfterRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, f := newDBFixture(t, func(v *fakeVault) { v.leaseTTL, v.leaseMax = 10*time.Second, 20*time.Second })
		var mu sync.Mutex
		var bodies []string
		f.notify = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, r.Method+" "+r.URL.String()+" "+string(b))
			mu.Unlock()
			return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
		})}
		f.start("--notify-url", "http://127.0.0.1:8080/-/reload")
		time.Sleep(16 * time.Second)
		mu.Lock()
		got := strings.Join(bodies, "\n")
		mu.Unlock()
		if got != `POST http://127.0.0.1:8080/-/reload {"secret":"db"}` {
			t.Errorf("notifications = %q; want one POST naming db", got)
		}
		f.stop()
	})
}

func TestFindProcesses(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	procs := map[string][2]string{ // pid: comm, cmdline
		"10":   {"nginx\n", "nginx: master process\x00"},
		"11":   {"python3\n", "/usr/bin/my-long-app-name\x00--flag\x00"},
		"12":   {"my-long-app-na\n", "x\x00"},
		"13":   {"sh\n", "/bin/sh\x00"},
		"42":   {"nginx\n", "nginx\x00"}, // ourselves
		"self": {"nginx\n", ""},
	}
	for pid, p := range procs {
		d := filepath.Join(root, pid)
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, "comm"), []byte(p[0]), 0o644)
		os.WriteFile(filepath.Join(d, "cmdline"), []byte(p[1]), 0o644)
	}
	if got := findProcesses(root, "nginx", 42); !slices.Equal(got, []int{10}) {
		t.Errorf("nginx: %v; want [10]", got)
	}
	got := findProcesses(root, "my-long-app-name", 0)
	slices.Sort(got)
	if !slices.Equal(got, []int{11}) {
		t.Errorf("my-long-app-name: %v; want [11] (argv[0]); comm holds only 15 bytes", got)
	}
}

// TestSignalReachesTheApp signals a child process found through a fake
// /proc that lists only it.
func TestSignalReachesTheApp(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	root := t.TempDir()
	d := filepath.Join(root, strconv.Itoa(cmd.Process.Pid))
	os.Mkdir(d, 0o755)
	os.WriteFile(filepath.Join(d, "comm"), []byte("myapp\n"), 0o644)
	var logs syncBuffer
	n := newNotifier(&Config{NotifyProcess: "myapp", signal: syscall.SIGUSR1}, newTestLogger(&logs), nil, root)
	n.signal([]string{"db"})
	err := cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGUSR1 {
		t.Errorf("child ended with %v; want killed by SIGUSR1", err)
	}
	if !strings.Contains(logs.String(), "signalled the app") {
		t.Errorf("logs: %s", logs.String())
	}
}
