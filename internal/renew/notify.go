package renew

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// notifyTimeout bounds one HTTP notification.
const notifyTimeout = 5 * time.Second

// notifier tells the app that a secret file changed, besides the atomic
// replace itself: a signal to a process in the pod and/or an HTTP POST. It
// runs on its own goroutine so that a slow app never delays a renewal.
type notifier struct {
	log      *slog.Logger
	sig      syscall.Signal
	process  string
	procRoot string // /proc; a fake one in tests
	url      string
	client   *http.Client
	ch       chan string
}

func newNotifier(cfg *Config, log *slog.Logger, client *http.Client, procRoot string) *notifier {
	if client == nil {
		client = &http.Client{Timeout: notifyTimeout}
	}
	return &notifier{
		log: log, sig: cfg.signal, process: cfg.NotifyProcess, procRoot: procRoot,
		url: cfg.NotifyURL, client: client, ch: make(chan string, 64),
	}
}

func (n *notifier) enabled() bool { return n != nil && (n.process != "" || n.url != "") }

// send queues a notification for secret name without blocking.
func (n *notifier) send(name string) {
	if !n.enabled() {
		return
	}
	select {
	case n.ch <- name:
	default:
		n.log.Warn("too many notifications queued; dropping one", "secret", name)
	}
}

// run delivers notifications until ctx ends. Changes that arrive together
// (a new token re-issues every credential) get one signal, and one POST
// per secret.
func (n *notifier) run(ctx context.Context) {
	for {
		var names []string
		select {
		case <-ctx.Done():
			return
		case name := <-n.ch:
			names = append(names, name)
		}
	drain:
		for {
			select {
			case name := <-n.ch:
				names = append(names, name)
			default:
				break drain
			}
		}
		if n.process != "" {
			n.signal(names)
		}
		if n.url != "" {
			for _, name := range names {
				n.post(ctx, name)
			}
		}
	}
}

func (n *notifier) signal(names []string) {
	pids := findProcesses(n.procRoot, n.process, os.Getpid())
	if len(pids) == 0 {
		n.log.Warn("no process to signal: is shareProcessNamespace: true set on the pod, and is --notify-process the app's process name?",
			"process", n.process, "secret", strings.Join(names, ","))
		return
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, n.sig); err != nil {
			n.log.Warn("could not signal the app", "process", n.process, "pid", pid, "signal", n.sig.String(), "err", err)
			continue
		}
		n.log.Info("signalled the app", "process", n.process, "pid", pid, "signal", n.sig.String(), "secret", strings.Join(names, ","))
	}
}

func (n *notifier) post(ctx context.Context, name string) {
	body, _ := json.Marshal(map[string]string{"secret": name})
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		n.log.Warn("could not notify the app", "url", n.url, "secret", name, "err", err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		n.log.Warn("could not notify the app", "url", n.url, "secret", name, "err", err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		n.log.Warn("the app answered the notification with an error", "url", n.url, "secret", name, "status", resp.StatusCode)
		return
	}
	n.log.Info("notified the app", "url", n.url, "secret", name, "status", resp.StatusCode)
}

// findProcesses returns the pids under procRoot whose name is name: the
// kernel's comm (cut to 15 bytes) or the base name of argv[0]. self is
// never returned.
func findProcesses(procRoot, name string, self int) []int {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	comm := name
	if len(comm) > 15 {
		comm = comm[:15]
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil && strings.TrimSuffix(string(b), "\n") == comm {
			pids = append(pids, pid)
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			argv0, _, _ := strings.Cut(string(b), "\x00")
			if argv0 != "" && filepath.Base(argv0) == name {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
