package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// Contenders of the pod-start benchmark.
const (
	cInit  = "vault-init"
	cAgent = "Vault Agent"
	cFloor = "floor"
)

var startContenders = []string{cInit, cAgent, cFloor}

// pod is one simulated pod's volumes: the projected service-account token,
// the secrets emptyDir and the state emptyDir.
type pod struct {
	dir, jwt, secrets, state, home string
}

func (b *bench) newPod(name string) (*pod, error) {
	dir := filepath.Join(b.work, "pods", name)
	p := &pod{
		dir:     dir,
		secrets: filepath.Join(dir, "secrets"),
		state:   filepath.Join(dir, "state"),
		home:    filepath.Join(dir, "home"),
	}
	for _, d := range []string{filepath.Join(dir, "sa"), p.secrets, p.state, p.home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	p.jwt = b.bed.WriteJWT(filepath.Join(dir, "sa"), testbed.Namespace, testbed.ServiceAccount)
	return p, nil
}

// credFile is where every contender writes the database credential.
func (p *pod) credFile() string { return filepath.Join(p.secrets, "db") }

// agentSetup is where a Vault Agent finds Vault and its files.
type agentSetup struct {
	vaultAddr string
	authMount string // without auth/
	role      string
	jwt       string // the projected service-account token
	pidFile   string
	sink      string // the token sink file
	dest      string // the rendered secret
}

// agentConfig is the Vault Agent configuration the Vault Agent injector
// generates for one database secret: kubernetes auto-auth, a token sink,
// one template rendering the secret's data as JSON (the same shape
// vault-init writes by default). Init mode adds exit_after_auth, as the
// injector's init container does.
func agentConfig(a agentSetup, secretPath string, initMode bool) testbed.AgentConfig {
	return testbed.AgentConfig{
		VaultAddr: a.vaultAddr, AuthMount: a.authMount, Role: a.role, JWTFile: a.jwt,
		SinkFile: a.sink, PIDFile: a.pidFile,
		ExitAfterAuth: initMode,
		Templates: []testbed.AgentTemplate{{
			Contents:    fmt.Sprintf(`{{ with secret %q }}{{ .Data | toJSON }}{{ end }}`, secretPath),
			Destination: a.dest,
			Perms:       "0440",
		}},
	}
}

// command returns the command line of contender name for pod p, reading
// secretPath after logging in as role.
func (b *bench) command(name string, p *pod, role, secretPath string, initMode bool) (*exec.Cmd, error) {
	var cmd *exec.Cmd
	switch name {
	case cInit:
		cmd = exec.Command(b.bins.init,
			"--vault-addr", b.bed.VaultAddr,
			"--role", role,
			"--jwt-file", p.jwt,
			"--secret", "db="+secretPath,
			"--secrets-dir", p.secrets,
			"--state-dir", p.state,
			"--timeout", "30s")
	case cAgent:
		cfg := filepath.Join(p.dir, "agent.json")
		if err := agentConfig(agentSetup{
			vaultAddr: b.bed.VaultAddr, authMount: "kubernetes", role: role, jwt: p.jwt,
			pidFile: filepath.Join(p.home, "agent.pid"), sink: filepath.Join(p.state, "token"), dest: p.credFile(),
		}, secretPath, initMode).WriteFile(cfg); err != nil {
			return nil, err
		}
		cmd = exec.Command(b.bins.vault, "agent", "-config="+cfg)
	case cFloor:
		cmd = exec.Command(b.bins.floor,
			"-vault-addr", b.bed.VaultAddr,
			"-role", role,
			"-jwt-file", p.jwt,
			"-path", secretPath,
			"-out", p.credFile())
	default:
		return nil, fmt.Errorf("unknown contender %q", name)
	}
	cmd.Dir = p.home
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + p.home}
	// Nothing outlives the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// startRun is one pod start of one contender.
type startRun struct {
	wall   time.Duration // exec to exit: how long the init container holds the pod
	toFile time.Duration // exec to the credential file's mtime
	server time.Duration // Vault's time on the requests (audit log)
	maxRSS int64         // bytes, from a separate run under GNU time (memOnce)
	cpu    time.Duration // user + system
	reqs   requestMix
}

// startOnce runs contender name once in a fresh pod and checks what it
// wrote.
func (b *bench) startOnce(ctx context.Context, name string, id string) (startRun, error) {
	var r startRun
	p, err := b.newPod(id)
	if err != nil {
		return r, err
	}
	if !b.cfg.keepPodDir {
		defer os.RemoveAll(p.dir)
	}
	cmd, err := b.command(name, p, testbed.Role, "database/creds/"+testbed.DBRole, true)
	if err != nil {
		return r, err
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := b.audit.mark(); err != nil {
		return r, err
	}
	began := time.Now()
	err = cmd.Run()
	r.wall = time.Since(began)
	if err != nil {
		return r, fmt.Errorf("%s (%s): %v; output:\n%s", name, id, err, tailLines(out.String(), 15))
	}
	// An upper bound only: see memOnce.
	r.maxRSS = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	es, err := b.audit.next()
	if err != nil {
		return r, err
	}
	r.reqs = mixOf(es)
	r.server = serverTime(es)

	fi, err := os.Stat(p.credFile())
	if err != nil {
		return r, fmt.Errorf("%s (%s) exited 0 but wrote no credential file: %w", name, id, err)
	}
	r.toFile = fi.ModTime().Sub(began)
	if err := b.checkCredFile(ctx, p.credFile()); err != nil {
		return r, fmt.Errorf("%s (%s): %w", name, id, err)
	}
	return r, nil
}

// memOnce runs contender name once under GNU time and returns its peak
// RSS in bytes.
//
// The bench cannot take the peak from its own wait4: Go starts children
// with vfork (CLONE_VM), and at execve Linux folds the hiwater RSS of the
// old address space, the bench's own, into the child's ru_maxrss, so every
// child would report at least the bench's peak. GNU time forks for real
// from a process of about a megabyte, so its wait4 sees the child's own
// peak (plus at most that megabyte).
func (b *bench) memOnce(ctx context.Context, name, id string) (int64, error) {
	p, err := b.newPod(id)
	if err != nil {
		return 0, err
	}
	if !b.cfg.keepPodDir {
		defer os.RemoveAll(p.dir)
	}
	cmd, err := b.command(name, p, testbed.Role, "database/creds/"+testbed.DBRole, true)
	if err != nil {
		return 0, err
	}
	memFile := filepath.Join(p.dir, "maxrss")
	cmd.Args = append([]string{b.gnuTime, "-f", "%M", "-o", memFile}, cmd.Args...)
	cmd.Path = b.gnuTime
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s under time (%s): %v; output:\n%s", name, id, err, tailLines(out.String(), 15))
	}
	raw, err := os.ReadFile(memFile)
	if err != nil {
		return 0, err
	}
	var kb int64
	if _, err := fmt.Sscan(strings.TrimSpace(tailLines(string(raw), 1)), &kb); err != nil {
		return 0, fmt.Errorf("GNU time output %q: %w", raw, err)
	}
	if err := b.checkCredFile(ctx, p.credFile()); err != nil {
		return 0, fmt.Errorf("%s (%s): %w", name, id, err)
	}
	return kb * 1024, nil
}

// noopOnce times a start of a contender's binary that does no work
// (`--version`): the cost of starting the program itself.
func (b *bench) noopOnce(name string) (time.Duration, error) {
	var cmd *exec.Cmd
	switch name {
	case cInit:
		cmd = exec.Command(b.bins.init, "--version")
	case cAgent:
		cmd = exec.Command(b.bins.vault, "version")
	default:
		return 0, fmt.Errorf("no no-op start for %q", name)
	}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + b.work}
	began := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(began)
	if err != nil {
		return 0, fmt.Errorf("%s: %v: %s", cmd, err, out)
	}
	return d, nil
}

// checkCredFile checks that file holds a database credential of the shape
// Vault issues and, with --verify-pg, that it logs in to PostgreSQL. It
// never prints the values.
func (b *bench) checkCredFile(ctx context.Context, file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var c struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%s is not a JSON object with username and password (%d bytes)", file, len(raw))
	}
	if !strings.HasPrefix(c.Username, "v-") || len(c.Password) < 16 {
		return fmt.Errorf("%s: username (%d chars) or password (%d chars) does not look like a Vault database credential", file, len(c.Username), len(c.Password))
	}
	if !b.cfg.verifyPG {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := b.bed.PGConnect(ctx, c.Username, c.Password)
	if err != nil {
		return fmt.Errorf("%s: the credential does not log in to PostgreSQL: %v", file, errors.Unwrap(err))
	}
	return conn.Close(ctx)
}

// startResults are the pod-start measurements of every contender, in the
// order measured.
type startResults struct {
	runs map[string][]startRun
	// rounds[i][name] is contender name's run of round i, for ratios
	// computed pair by pair.
	rounds []map[string]startRun
	// noop[name] are exec-to-exit times of the contender's binary doing
	// nothing (--version), for vault-init and the Agent's vault.
	noop map[string][]time.Duration
	// rusageMaxRSS is true when peak memory comes from the bench's own
	// wait4 (no GNU time): an upper bound.
	rusageMaxRSS bool
}

// podStarts runs every contender cfg.runs times, interleaved, with the
// order rotated each round so no contender always follows the revocation.
// One discarded warm-up round first loads the binaries into the page cache.
func (b *bench) podStarts(ctx context.Context) (*startResults, error) {
	res := &startResults{runs: map[string][]startRun{}, noop: map[string][]time.Duration{}, rusageMaxRSS: b.gnuTime == ""}
	n := len(startContenders)
	for round := -1; round < b.cfg.runs; round++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		row := map[string]startRun{}
		for k := range n {
			name := startContenders[(max(round, 0)+k)%n]
			id := fmt.Sprintf("start-%d-%s", round, strings.ReplaceAll(name, " ", "-"))
			r, err := b.startOnce(ctx, name, id)
			if err != nil {
				return nil, err
			}
			row[name] = r
		}
		// Peak memory from separate runs, so that GNU time's extra fork
		// does not touch the timings.
		if b.gnuTime != "" {
			for k := range n {
				name := startContenders[(max(round, 0)+k)%n]
				r := row[name]
				var err error
				if r.maxRSS, err = b.memOnce(ctx, name, fmt.Sprintf("mem-%d-%s", round, strings.ReplaceAll(name, " ", "-"))); err != nil {
					return nil, err
				}
				row[name] = r
			}
		}
		for k := range 2 {
			name := []string{cInit, cAgent}[(max(round, 0)+k)%2]
			d, err := b.noopOnce(name)
			if err != nil {
				return nil, err
			}
			if round >= 0 {
				res.noop[name] = append(res.noop[name], d)
			}
		}
		if round >= 0 {
			for name, r := range row {
				res.runs[name] = append(res.runs[name], r)
			}
			res.rounds = append(res.rounds, row)
		}
		// Drop the database users of this round so PostgreSQL stays small.
		if err := b.revokePrefix(ctx, "database/creds/"+testbed.DBRole); err != nil {
			return nil, err
		}
		if round >= 0 && (round+1)%10 == 0 {
			logf("  %d/%d rounds", round+1, b.cfg.runs)
		}
	}
	return res, nil
}

func (b *bench) revokePrefix(ctx context.Context, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := b.bed.Root().Sys().RevokePrefixWithContext(ctx, prefix); err != nil {
		return fmt.Errorf("revoke %s: %w", prefix, err)
	}
	return nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
