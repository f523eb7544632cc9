package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// errRenewUnavailable means vault-renew cannot be measured with this
// build (it exits at once, e.g. "not implemented").
var errRenewUnavailable = errors.New("vault-renew unavailable")

// Contenders of the sidecar benchmark.
const (
	sRenew = "vault-renew"
	sAgent = "Vault Agent sidecar"
	// sFloor is the floor program kept running with its Vault client and
	// an idle HTTP server: the memory any Go sidecar built on the Vault
	// client library starts from. It renews nothing.
	sFloor = "floor"
)

// benchRole is the database and kubernetes role with the short TTL the
// renewing sidecars get.
const benchRole = "bench"

// sidecar is one running sidecar and what was measured of it.
type sidecar struct {
	name     string
	ttl      time.Duration
	cmd      *exec.Cmd
	out      testbed.SyncBuffer
	done     chan struct{}
	pod      *pod
	accessor string // the token whose requests are this sidecar's

	startReqs  requestMix // requests from its start until ready (+1 s)
	first      procSample // at the start of the window
	mid        procSample // half way through the window
	last       procSample // at the end of the window
	maxRSS     int64      // highest VmRSS sampled in the window
	windowReqs requestMix
	renewals   int // lease and token renewals in the window
	// renewedAt are the times of the renewal requests in the window, by
	// kind ("token" or "lease").
	renewedAt map[string][]time.Time
	credErr   error
}

func (s *sidecar) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *sidecar) stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// sidecarResults are the sidecar measurements: a pair renewing at a short
// TTL and a pair with nothing due (1 h TTL), watched over the same window.
type sidecarResults struct {
	window   time.Duration
	ttl      time.Duration
	renewing map[string]*sidecar
	idle     map[string]*sidecar
	// fleet are, by kind, the renewing pods whose renewals give the rate
	// and the margins: renewing's first, then more like it (--rate-pods),
	// watched for their requests only.
	fleet map[string][]*sidecar
	// other are window requests no sidecar's token made (new logins).
	other requestMix
}

// sidecars starts, in this order, an idle vault-renew, an idle Agent (both
// at 1 h TTL, so nothing is due), the floor kept running, then a renewing
// vault-renew and Agent at cfg.ttl, and watches all five over one window;
// beside them run cfg.ratePods-1 more renewing pods of each kind, whose
// requests count towards the rate only.
func (b *bench) sidecars(ctx context.Context) (*sidecarResults, error) {
	c := b.cfg
	// The max TTLs lie beyond the window, so that it holds renewals only,
	// no rotation or new login.
	maxTTL := c.window + 10*time.Minute
	if err := b.bed.CreateDBRole(benchRole, c.ttl, maxTTL); err != nil {
		return nil, err
	}
	if err := b.bed.CreateK8sRole(benchRole, c.ttl, maxTTL, testbed.Policy); err != nil {
		return nil, err
	}
	res := &sidecarResults{window: c.window, ttl: c.ttl, renewing: map[string]*sidecar{}, idle: map[string]*sidecar{}, fleet: map[string][]*sidecar{}}
	var all []*sidecar
	defer func() {
		for _, s := range all {
			s.stop()
		}
		_ = b.revokePrefix(context.Background(), "database/creds/")
	}()

	var renewErr error
	for _, setup := range []struct {
		into map[string]*sidecar
		name string
		role string
		ttl  time.Duration
	}{
		{res.idle, sRenew, testbed.Role, time.Hour},
		{res.idle, sAgent, testbed.Role, time.Hour},
		{res.idle, sFloor, testbed.Role, time.Hour},
		{res.renewing, sRenew, benchRole, c.ttl},
		{res.renewing, sAgent, benchRole, c.ttl},
	} {
		s, err := b.startSidecar(ctx, setup.name, setup.role, setup.ttl)
		if s != nil {
			all = append(all, s)
		}
		if errors.Is(err, errRenewUnavailable) {
			renewErr = err
			continue
		}
		if err != nil {
			return nil, err
		}
		setup.into[setup.name] = s
	}
	var extras []*sidecar
	for _, name := range []string{sRenew, sAgent} {
		first := res.renewing[name]
		if first == nil {
			continue
		}
		res.fleet[name] = []*sidecar{first}
		for i := 1; i < c.ratePods; i++ {
			s, err := b.startVariant(ctx, variant{label: fmt.Sprintf("%s %d", name, i+1), kind: name}, benchRole, c.ttl)
			if s != nil {
				all = append(all, s)
			}
			if err != nil {
				return nil, err
			}
			res.fleet[name] = append(res.fleet[name], s)
			extras = append(extras, s)
		}
	}

	if err := b.audit.mark(); err != nil {
		return nil, err
	}
	var running []*sidecar
	for _, m := range []map[string]*sidecar{res.idle, res.renewing} {
		for _, s := range m {
			first, err := sampleProc(s.cmd.Process.Pid)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			s.first = first
			s.maxRSS = s.first.rss
			running = append(running, s)
		}
	}
	// Every process is watched for an early exit; the extras' memory is
	// not sampled.
	watched := append(slices.Clone(running), extras...)
	began := time.Now()
	end := began.Add(c.window)
	midDone := false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		for _, s := range watched {
			if s.exited() {
				return nil, fmt.Errorf("%s exited during the window: %v\n%s", s.name, s.cmd.ProcessState, tailLines(s.out.String(), 15))
			}
		}
		for _, s := range running {
			smp, err := sampleProc(s.cmd.Process.Pid)
			if err != nil {
				return nil, err
			}
			s.last = smp
			s.maxRSS = max(s.maxRSS, smp.rss)
			if !midDone && time.Since(began) >= c.window/2 {
				s.mid = smp
			}
		}
		if time.Since(began) >= c.window/2 {
			midDone = true
		}
	}
	es, err := b.audit.next()
	if err != nil {
		return nil, err
	}
	byAccessor := map[string]*sidecar{}
	for _, s := range watched {
		if s.accessor != "" {
			byAccessor[s.accessor] = s
		}
		s.windowReqs = requestMix{}
		s.renewedAt = map[string][]time.Time{}
	}
	res.other = requestMix{}
	for _, e := range es {
		if e.Type != "request" {
			continue
		}
		s := byAccessor[e.Auth.Accessor]
		if s == nil {
			res.other[foldPath(e.key())]++
			continue
		}
		s.windowReqs[foldPath(e.key())]++
		if kind := renewalKind(e.Request.Path); kind != "" {
			s.renewals++
			s.renewedAt[kind] = append(s.renewedAt[kind], e.Time)
		}
	}
	// A credential still logging in after several TTLs proves that the
	// lease was renewed (PostgreSQL's VALID UNTIL moves with it) or the
	// credential replaced.
	for _, s := range watched {
		s.credErr = b.checkCredFile(ctx, s.pod.credFile())
	}
	if renewErr != nil {
		return res, renewErr
	}
	return res, nil
}

// renewalKind says whether path renews a lease ("lease") or a token
// ("token"); "" for anything else.
func renewalKind(path string) string {
	switch {
	case path == "sys/leases/renew" || strings.HasPrefix(path, "sys/leases/renew/") ||
		path == "sys/renew" || strings.HasPrefix(path, "sys/renew/"):
		return "lease"
	case path == "auth/token/renew-self" || path == "auth/token/renew":
		return "token"
	}
	return ""
}

// renewalsPerTTL is how many renewals the sidecar makes per TTL, summed
// over its credentials (token and lease), from the median interval
// between successive renewals of each; ok is false when some kind
// renewed fewer than twice in the window.
func (s *sidecar) renewalsPerTTL() (perTTL float64, intervals map[string]time.Duration, ok bool) {
	intervals = map[string]time.Duration{}
	ok = len(s.renewedAt) > 0
	for kind, ts := range s.renewedAt {
		if len(ts) < 2 {
			ok = false
			continue
		}
		var gaps []float64
		for i := 1; i < len(ts); i++ {
			gaps = append(gaps, float64(ts[i].Sub(ts[i-1])))
		}
		iv := time.Duration(median(gaps))
		intervals[kind] = iv
		perTTL += float64(s.ttl) / float64(iv)
	}
	return perTTL, intervals, ok
}

// margins is the fraction of a credential's TTL that was left when it was
// renewed, over every renewal of the token and the lease of every sidecar
// in ss in the window: one minus the time since the same credential's
// previous renewal over the TTL (every renewal in the bench is granted
// the full TTL, as the max TTLs lie beyond the window). ok is false when
// some credential renewed fewer than twice in the window.
func margins(ss ...*sidecar) (med, least float64, ok bool) {
	ok = len(ss) > 0
	var left []float64
	for _, s := range ss {
		ok = ok && len(s.renewedAt) > 0
		for _, ts := range s.renewedAt {
			if len(ts) < 2 {
				ok = false
				continue
			}
			for i := 1; i < len(ts); i++ {
				left = append(left, 1-float64(ts[i].Sub(ts[i-1]))/float64(s.ttl))
			}
		}
	}
	if len(left) == 0 {
		return 0, 0, false
	}
	return median(left), slices.Min(left), ok
}

// startSidecar starts one sidecar and waits until it is ready: for
// vault-renew, vault-init runs first and the sidecar must answer /readyz;
// the Agent must have rendered its template.
func (b *bench) startSidecar(ctx context.Context, name, role string, ttl time.Duration) (*sidecar, error) {
	return b.startVariant(ctx, variant{label: name, kind: name}, role, ttl)
}

// variant is a sidecar program run the way contender kind is: label names
// it, bin (if set) replaces the contender's binary and env is added to its
// environment.
type variant struct {
	label, kind, bin string
	env              []string
}

// freeListen is a listen address on 127.0.0.1 whose port was free a
// moment ago.
func freeListen() (string, error) {
	port, err := testbed.FreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// startVariant is startSidecar for a variant of a contender.
func (b *bench) startVariant(ctx context.Context, v variant, role string, ttl time.Duration) (*sidecar, error) {
	name := v.kind
	p, err := b.newPod(fmt.Sprintf("sidecar-%s-%s", strings.NewReplacer(" ", "-", "/", "-").Replace(v.label), ttl))
	if err != nil {
		return nil, err
	}
	s := &sidecar{name: v.label, ttl: ttl, pod: p, done: make(chan struct{})}
	secretPath := "database/creds/" + role
	var readyz string
	switch name {
	case sRenew:
		initCmd, err := b.command(cInit, p, role, secretPath, true)
		if err != nil {
			return nil, err
		}
		if out, err := initCmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("vault-init for the sidecar: %v\n%s", err, tailLines(string(out), 15))
		}
		if s.accessor, err = stateAccessor(p.state); err != nil {
			return nil, err
		}
		listen, err := freeListen()
		if err != nil {
			return nil, err
		}
		readyz = "http://" + listen + "/readyz"
		bin := cmp.Or(v.bin, b.bins.renew)
		s.cmd = exec.Command(bin, "--state-dir", p.state, "--secrets-dir", p.secrets, "--listen", listen)
		s.cmd.Dir = p.home
		s.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + p.home}
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	case sAgent:
		if s.cmd, err = b.command(cAgent, p, role, secretPath, false); err != nil {
			return nil, err
		}
	case sFloor:
		if s.cmd, err = b.command(cFloor, p, role, secretPath, false); err != nil {
			return nil, err
		}
		listen, err := freeListen()
		if err != nil {
			return nil, err
		}
		readyz = "http://" + listen + "/readyz"
		s.cmd.Args = append(s.cmd.Args, "-serve", listen)
		if v.bin != "" {
			s.cmd.Path, s.cmd.Args[0] = v.bin, v.bin
		}
	}
	s.cmd.Env = append(s.cmd.Env, v.env...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := b.audit.mark(); err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()

	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		if s.exited() {
			msg := fmt.Sprintf("%s exited at start (%v): %s", name, s.cmd.ProcessState, strings.TrimSpace(tailLines(s.out.String(), 5)))
			if name == sRenew {
				return s, fmt.Errorf("%w: %s", errRenewUnavailable, msg)
			}
			return s, errors.New(msg)
		}
		ready := false
		if readyz != "" {
			if resp, err := hc.Get(readyz); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode == http.StatusOK
			}
		} else if _, err := os.Stat(p.credFile()); err == nil {
			ready = true
		}
		if ready {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return s, fmt.Errorf("%s not ready after 30s:\n%s", name, tailLines(s.out.String(), 15))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if name == sAgent {
		if s.accessor, err = b.tokenAccessor(ctx, filepath.Join(p.state, "token")); err != nil {
			return s, err
		}
	}
	es, err := b.audit.next()
	if err != nil {
		return s, err
	}
	var mine []auditEntry
	for _, e := range es {
		// Logins carry no token yet; nothing else logs in meanwhile.
		if e.Auth.Accessor == s.accessor || e.Auth.Accessor == "" {
			mine = append(mine, e)
		}
	}
	s.startReqs = mixOf(mine)
	if err := b.checkCredFile(ctx, p.credFile()); err != nil {
		return s, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// stateAccessor reads the token accessor from vault-init's state.json.
func stateAccessor(stateDir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	if err != nil {
		return "", err
	}
	var st struct {
		Token struct {
			Accessor string `json:"accessor"`
		} `json:"token"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.Token.Accessor == "" {
		return "", fmt.Errorf("%s/state.json: no token accessor (%v)", stateDir, err)
	}
	return st.Token.Accessor, nil
}

// tokenAccessor looks up the accessor of the token in file (the Agent's
// sink) with the root token.
func (b *bench) tokenAccessor(ctx context.Context, file string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("agent token sink: %w", err)
	}
	s, err := b.bed.Root().Auth().Token().LookupWithContext(ctx, strings.TrimSpace(string(raw)))
	if err != nil {
		return "", fmt.Errorf("look up the agent's token: %w", err)
	}
	acc, _ := s.TokenAccessor()
	if acc == "" {
		return "", errors.New("the agent's token has no accessor")
	}
	return acc, nil
}
