// Command demo plays one pod's life on this machine against the test bed:
// vault-init writes a database credential, vault-renew keeps it alive and
// rotates it at its max TTL while a small app queries PostgreSQL every
// second with whatever the file holds, then vault-revoke ends it and the
// demo shows the database user is gone. It prints a timeline, never a
// secret. Run it with `make demo`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

func main() {
	binDir := flag.String("bin-dir", "../bin", "directory holding vault-init, vault-renew and vault-revoke")
	ttl := flag.Duration("ttl", 10*time.Second, "default TTL of the demo's database role")
	maxTTL := flag.Duration("max-ttl", 30*time.Second, "max TTL of the demo's database role: the credential is rotated before it")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{binDir: *binDir, start: time.Now(), out: os.Stdout}
	err := d.run(ctx, *ttl, *maxTTL)
	d.cleanup()
	switch {
	case errors.Is(err, context.Canceled):
		d.say("demo", "interrupted: cleaned up")
		os.Exit(130)
	case err != nil:
		d.say("demo", "FAILED: %v", err)
		os.Exit(1)
	}
}

type demo struct {
	binDir string
	start  time.Time
	mu     sync.Mutex
	out    io.Writer
	bed    *testbed.Bed
	renew  *exec.Cmd
	waitCh chan struct{}
	events map[string]int // timeline messages seen, by kind
}

// say prints one timeline line.
func (d *demo) say(who, format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "%6.1fs  %-7s %s\n", time.Since(d.start).Seconds(), who, fmt.Sprintf(format, args...))
}

func (d *demo) cleanup() {
	if d.renew != nil && d.renew.Process != nil {
		_ = d.renew.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.waitCh:
		case <-time.After(5 * time.Second):
			_ = d.renew.Process.Kill()
		}
	}
	if d.bed != nil {
		d.bed.Close()
	}
}

func (d *demo) run(ctx context.Context, ttl, maxTTL time.Duration) error {
	for _, b := range []string{"vault-init", "vault-renew", "vault-revoke"} {
		if _, err := os.Stat(filepath.Join(d.binDir, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run make build", b, d.binDir)
		}
	}
	d.say("demo", "starting a throwaway PostgreSQL and Vault dev server, configured as manifests/vault/ configures a cluster")
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	bed, err := testbed.Start(startCtx, nil)
	cancel()
	if err != nil {
		return err
	}
	d.bed = bed
	if err := bed.CreateDBRole("demo", ttl, maxTTL); err != nil {
		return err
	}
	d.say("demo", "Vault %s, PostgreSQL %s; database role %q: TTL %s, max TTL %s", bed.VaultAddr, bed.PGAddr, "demo", ttl, maxTTL)

	pod := filepath.Join(bed.Dir, "pod")
	secretsDir, stateDir, saDir := filepath.Join(pod, "secrets"), filepath.Join(pod, "state"), filepath.Join(pod, "sa")
	for _, dir := range []string{secretsDir, stateDir, saDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	jwt := bed.WriteJWT(saDir, testbed.Namespace, testbed.ServiceAccount)
	env := []string{"PATH=/usr/bin:/bin", "VAULT_ADDR=" + bed.VaultAddr, "PODLEASE_LOG_FORMAT=json",
		"PODLEASE_STATE_DIR=" + stateDir, "PODLEASE_SECRETS_DIR=" + secretsDir}

	d.say("kubelet", "pod starts: init container vault-init")
	init := exec.CommandContext(ctx, filepath.Join(d.binDir, "vault-init"),
		"--role", testbed.Role, "--jwt-file", jwt, "--secret", "db=database/creds/demo", "--timeout", "30s")
	init.Env = env
	if err := d.runLogged(init, "init"); err != nil {
		return fmt.Errorf("vault-init: %w", err)
	}
	credFile := filepath.Join(secretsDir, "db")

	port, err := testbed.FreePort()
	if err != nil {
		return err
	}
	d.say("kubelet", "native sidecar vault-renew starts, then the app")
	d.renew = exec.Command(filepath.Join(d.binDir, "vault-renew"), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--grace", "5s", "--revoke-on-exit")
	d.renew.Env = env
	d.renew.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := d.renew.StderrPipe()
	if err != nil {
		return err
	}
	if err := d.renew.Start(); err != nil {
		return err
	}
	d.waitCh = make(chan struct{})
	go func() { d.timeline("renew", stderr); d.renew.Wait(); close(d.waitCh) }()

	app := &app{demo: d, file: credFile}
	appCtx, stopApp := context.WithCancel(ctx)
	appDone := make(chan struct{})
	go func() { app.loop(appCtx); close(appDone) }()

	// Run until the credential has been rotated once and the old one
	// revoked after its grace period, or for the max TTL plus a margin.
	deadline := time.After(maxTTL + ttl + 10*time.Second)
wait:
	for {
		select {
		case <-ctx.Done():
			stopApp()
			return ctx.Err()
		case <-deadline:
			break wait
		case <-time.After(500 * time.Millisecond):
			if d.seen("revoked") > 0 && app.users() >= 2 {
				time.Sleep(2 * time.Second)
				break wait
			}
		}
	}
	stopApp()
	<-appDone
	users := app.userList()
	d.say("kubelet", "pod terminates: the app has exited, so the native sidecar gets SIGTERM and revokes (--revoke-on-exit)")
	_ = d.renew.Process.Signal(syscall.SIGTERM)
	<-d.waitCh
	d.renew = nil
	d.say("kubelet", "vault-revoke run by hand afterwards: idempotent, nothing left to do")
	revoke := exec.CommandContext(ctx, filepath.Join(d.binDir, "vault-revoke"), "--timeout", "10s")
	revoke.Env = env
	if err := d.runLogged(revoke, "revoke"); err != nil {
		return fmt.Errorf("vault-revoke: %w", err)
	}

	gone, err := d.usersGone(ctx, users)
	if err != nil {
		return err
	}
	ok, failed := app.counts()
	d.say("demo", "summary: %d queries, %d failed; %d database users issued (%s), %d still in PostgreSQL after revocation",
		ok+failed, failed, len(users), strings.Join(users, ", "), len(users)-gone)
	if failed > 0 || gone != len(users) || len(users) < 2 {
		return fmt.Errorf("the pod's life did not go as promised (see the summary)")
	}
	return nil
}

// runLogged runs a binary to completion, turning its JSON log into
// timeline lines.
func (d *demo) runLogged(cmd *exec.Cmd, who string) error {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.timeline(who, stderr)
	return cmd.Wait()
}

// timeline prints the interesting part of each JSON log line of a binary:
// the message and the lease ids, TTLs and accessors, shortened.
func (d *demo) timeline(who string, r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			d.say(who, "%s", sc.Text())
			continue
		}
		msg, _ := rec["msg"].(string)
		d.note(msg)
		var attrs []string
		keys := make([]string, 0, len(rec))
		for k := range rec {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch k {
			case "time", "level", "msg", "file", "path", "mode", "policies", "method", "mount", "role":
				continue
			}
			attrs = append(attrs, k+"="+short(k, rec[k]))
		}
		d.say(who, "%s  %s", msg, strings.Join(attrs, " "))
	}
}

func (d *demo) note(msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.events == nil {
		d.events = map[string]int{}
	}
	switch {
	case strings.Contains(msg, "revoked") && strings.Contains(msg, "lease"):
		d.events["revoked"]++
	}
}

func (d *demo) seen(kind string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.events[kind]
}

// short renders a log value briefly: lease ids and accessors keep their
// path and five characters.
func short(key string, v any) string {
	s := fmt.Sprint(v)
	// slog's JSON handler writes durations as nanoseconds.
	if ns, ok := v.(float64); ok && (strings.HasSuffix(key, "ttl") || strings.HasSuffix(key, "_in") || key == "elapsed" || key == "asked" || key == "got") {
		d := time.Duration(ns)
		if d < time.Second {
			return d.Round(time.Millisecond).String()
		}
		return d.Round(100 * time.Millisecond).String()
	}
	switch {
	case strings.HasSuffix(key, "lease_id"):
		if i := strings.LastIndex(s, "/"); i >= 0 && len(s) > i+6 {
			return s[:i+6] + "…"
		}
	case strings.HasSuffix(key, "accessor") && len(s) > 6:
		return s[:5] + "…"
	}
	return s
}

// usersGone counts how many of the users no longer exist in PostgreSQL.
func (d *demo) usersGone(ctx context.Context, users []string) (int, error) {
	conn, err := d.bed.PGSuperuser(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	gone := 0
	for _, u := range users {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", u).Scan(&n); err != nil {
			return 0, err
		}
		state := "still exists"
		if n == 0 {
			gone++
			state = "is gone"
		}
		d.say("psql", "database user %s %s", u, state)
	}
	return gone, nil
}
