package e2e

// Crash safety: kill -9 at random moments, then start again on the same
// directories, as Kubernetes does after an OOM kill or a node hiccup.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/podlease/podlease/internal/state"

	"github.com/podlease/podlease/e2e/testbed"
)

// startKillable starts a podlease binary to be killed: its output joins
// the hygiene scan, and wait returns whether SIGKILL ended it.
func startKillable(t *testing.T, name string, args, env []string) (cmd *exec.Cmd, out *testbed.SyncBuffer, done <-chan error) {
	t.Helper()
	cmd = exec.Command(bins[name], args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}, env...)
	out = &testbed.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	keepOutput(t.Name()+" "+name+" (killed)", out)
	runtime.LockOSThread() // Pdeathsig follows the thread that started the child
	err := cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	return cmd, out, ch
}

// killedBySignal reports whether a Wait error says SIGKILL ended the
// process.
func killedBySignal(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled()
}

// killAfter starts a podlease binary, kills it with SIGKILL after d (if it
// is still running) and returns whether the kill came before it exited.
func killAfter(t *testing.T, d time.Duration, name string, args []string, env ...string) (killed bool, out string) {
	t.Helper()
	cmd, buf, done := startKillable(t, name, args, env)
	select {
	case <-done:
		return false, buf.String()
	case <-time.After(d):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	return killedBySignal(<-done), buf.String()
}

// killOnReplace starts a podlease binary and kills it with SIGKILL the
// instant file is renamed into place (inotify IN_MOVED_TO), or after
// timeout. hit says whether the rename triggered the kill.
func killOnReplace(t *testing.T, file string, timeout time.Duration, name string, args []string, env ...string) (killed, hit bool, out string) {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	events := os.NewFile(uintptr(fd), "inotify") // non-blocking: Close ends a pending Read
	defer events.Close()
	if _, err := syscall.InotifyAddWatch(fd, filepath.Dir(file), syscall.IN_MOVED_TO); err != nil {
		t.Fatalf("inotify watch %s: %v", filepath.Dir(file), err)
	}
	cmd, buf, done := startKillable(t, name, args, env)
	renamed := make(chan struct{})
	go func() {
		b := make([]byte, 64<<10)
		for {
			n, err := events.Read(b)
			if err != nil {
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&b[off]))
				name := b[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
				if strings.TrimRight(string(name), "\x00") == filepath.Base(file) {
					_ = cmd.Process.Signal(syscall.SIGKILL)
					close(renamed)
					return
				}
				off += syscall.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}()
	var waitErr error
	select {
	case <-renamed:
		hit = true
		waitErr = <-done
	case waitErr = <-done:
		select {
		case <-renamed:
			hit = true
		default:
		}
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		waitErr = <-done
	}
	return killedBySignal(waitErr), hit, buf.String()
}

// tempFiles lists atomicfile's temporary files in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var tmp []string
	for _, n := range dirEntries(t, dir) {
		if strings.Contains(n, ".tmp-") {
			tmp = append(tmp, n)
		}
	}
	return tmp
}

// TestCrashInit kills vault-init at random moments of its run, on fresh
// pods, then runs it again on the same directories as the kubelet would.
// After the kill the directories hold either no state.json (nothing was
// committed: the app cannot start) or a complete, consistent set; the
// rerun always succeeds; and in the end no lease of any killed run is left
// in Vault: the rerun revokes the token the killed run obtained.
func TestCrashInit(t *testing.T) {
	t.Parallel()
	const role = "crshinit"
	const kills = 40
	if err := bed.CreateDBRole(role, time.Hour, time.Hour); err != nil {
		t.Fatal(err)
	}
	prefix := "database/creds/" + role + "/"
	t.Cleanup(func() { revokePrefix(t, prefix) })
	secretArgs := []string{"--secret", "db=database/creds/" + role, "--secret", "kv=secret/data/app", "--secret", "st=database/static-creds/app-static", "--format", "st=env"}

	// How long a whole run takes here, to spread the kills over it.
	p0 := newPod(t)
	r0 := p0.mustInit(secretArgs...)
	span := max(r0.elapsed, 20*time.Millisecond)
	if r := run(t, "vault-revoke", []string{"--state-dir", p0.stateDir, "--secrets-dir", p0.secretsDir}, p0.env...); r.code != 0 {
		t.Fatalf("vault-revoke: %s", r.stderr)
	}

	var outcome = map[string]int{}
	var tempsLeft int
	for i := range kills {
		p := newPod(t)
		d := time.Duration(rand.Int64N(int64(span)))
		killed, _ := killAfter(t, d, "vault-init", p.initArgs(secretArgs...), p.env...)
		if !killed {
			outcome["finished before the kill"]++
		}
		tempsLeft += len(tempFiles(t, p.secretsDir)) + len(tempFiles(t, p.stateDir))
		_, err := os.Stat(filepath.Join(p.stateDir, state.FileName))
		switch {
		case err == nil:
			assertCompleteSet(t, p)
			noteSecret(p.token())
			if killed {
				outcome["complete set"]++
			}
		case errors.Is(err, os.ErrNotExist):
			files := dirEntries(t, p.secretsDir)
			_, pendErr := os.Stat(filepath.Join(p.stateDir, "token.pending"))
			switch {
			case len(files) > 0:
				outcome["no state.json; secret files of the uncommitted run"]++
			case pendErr == nil:
				outcome["no state.json; only the run's journal"]++
			default:
				outcome["nothing"]++
			}
			if pendErr == nil {
				noteSecret(strings.TrimSpace(testbed.ReadFile(t, filepath.Join(p.stateDir, "token.pending"))))
			}
		default:
			t.Fatal(err)
		}
		// The kubelet runs the init container again.
		p.mustInit(secretArgs...)
		assertCompleteSet(t, p)
		if tmp := append(tempFiles(t, p.secretsDir), tempFiles(t, p.stateDir)...); len(tmp) > 0 {
			t.Errorf("kill %d: temporary files left after the rerun: %v", i, tmp)
		}
		if _, err := os.Stat(filepath.Join(p.stateDir, "token.pending")); err == nil {
			t.Errorf("kill %d: the journal is still there after a successful run", i)
		}
		user, pass := dbCreds(t, filepath.Join(p.secretsDir, "db"))
		if err := pgLogin(user, pass); err != nil {
			t.Errorf("kill %d: the rerun's credential does not log in: %v", i, err)
		}
		if r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, p.env...); r.code != 0 {
			t.Fatalf("kill %d: vault-revoke: %s", i, r.stderr)
		}
	}
	// Every pod ran vault-revoke: a lease left now belongs to a killed run
	// whose token nobody revoked.
	left := leasesLeft(t, prefix, 10*time.Second)
	if len(left) > 0 {
		t.Errorf("%d leases of killed runs outlive their pods: %v", len(left), left)
	}
	figure(t, "crash", "vault-init killed at random within its %s run, %d times, each then rerun and revoked: outcomes %v; temporary files left by the kill and removed by the rerun: %d; reruns ok: %d/%d; leases orphaned: %d",
		span.Round(time.Millisecond), kills, outcome, tempsLeft, kills, kills, len(left))
}

// TestCrashRenew kills vault-renew while it renews one short lease and
// keeps replacing another that reaches its max TTL every few seconds, and
// starts it again on the same state dir each time: at random moments, and
// the instant a rotation has replaced the secret file (before state.json
// names the new lease). After every kill: state.json parses, every secret
// file is a complete credential that logs in and is the one state.json
// records, every lease the state names is live and no lease exists that
// the state does not name; the renewable credential keeps its one lease
// through all the kills (nothing lost, nothing issued twice); and after
// vault-revoke no lease is left.
func TestCrashRenew(t *testing.T) {
	t.Parallel()
	type crashMode struct {
		name     string
		kills    int
		targeted bool
	}
	concurrently(t, []crashMode{{"random", 20, false}, {"mid-rotation", 5, true}}, func(m crashMode) string { return m.name },
		func(t *testing.T, m crashMode) { crashRenew(t, m.name, m.kills, m.targeted) })
}

// inFlightWindow is how long before a kill Vault may have issued a lease
// whose answer had not yet reached vault-renew's journal.
const inFlightWindow = 5 * time.Second

func crashRenew(t *testing.T, mode string, kills int, targeted bool) {
	const ttl = 4 * time.Second
	renRole, rotRole := "crren"+mode[:3], "crrot"+mode[:3]
	if err := bed.CreateDBRole(renRole, ttl, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := bed.CreateDBRole(rotRole, ttl, 2*ttl); err != nil {
		t.Fatal(err)
	}
	prefixes := []string{"database/creds/" + renRole + "/", "database/creds/" + rotRole + "/"}
	t.Cleanup(func() {
		for _, p := range prefixes {
			revokePrefix(t, p)
		}
	})
	p := newPod(t)
	p.mustInit("--secret", "ren=database/creds/"+renRole, "--secret", "rot=database/creds/"+rotRole)
	st0, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	renLease := st0.Lookup("ren").LeaseID
	renewArgs := []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--grace", "1s", "--log-level", "debug"}

	rotLeases := map[string]bool{st0.Lookup("rot").LeaseID: true}
	var mismatches, loginFailures, hits int
	var converge time.Duration        // longest time for file and state to agree after a restart
	orphans := map[string]time.Time{} // lease id -> first seen
	// What Vault last said was left of the renewable lease, and when: a
	// lease with less than a second left when the next vault-renew starts
	// may lapse before it is renewed (Vault counts whole seconds, and a
	// kill can fall just before a renewal). That is the lease's TTL at
	// work, not vault-renew losing a credential.
	renLeft, renAt := ttl, time.Now()
	var lapsed, inFlight int
	began := time.Now()
	for i := range kills {
		var killed, hit bool
		var out string
		startedAt, prevRenLeft, prevRenAt := time.Now(), renLeft, renAt
		if targeted {
			killed, hit, out = killOnReplace(t, filepath.Join(p.secretsDir, "rot"), 3*ttl, "vault-renew", renewArgs, p.env...)
			if hit {
				hits++
			}
		} else {
			d := 500*time.Millisecond + time.Duration(rand.Int64N(int64(2500*time.Millisecond)))
			killed, out = killAfter(t, d, "vault-renew", renewArgs, p.env...)
		}
		if !killed {
			t.Fatalf("kill %d: vault-renew exited by itself:\n%s", i, out)
		}
		killedAt := time.Now()
		st, err := state.Load(p.stateDir)
		if err != nil {
			t.Fatalf("kill %d: state.json: %v", i, err)
		}
		known := map[string]bool{}
		for _, r := range st.Retiring {
			known[r.LeaseID] = true
		}
		// A kill mid-rotation leaves the new lease journaled as pending:
		// named in state.json, and the file may already hold it.
		journaled := map[string]bool{} // secrets with a pending credential
		for _, pe := range st.Pending {
			known[pe.LeaseID] = true
			journaled[pe.Name] = true
		}
		for _, s := range st.Secrets {
			known[s.LeaseID] = true
			b, err := os.ReadFile(s.File)
			if err != nil {
				t.Fatalf("kill %d: %v", i, err)
			}
			var c struct{ Username, Password string }
			if err := json.Unmarshal(b, &c); err != nil || c.Username == "" || c.Password == "" {
				t.Fatalf("kill %d: %s is not a complete credential: %v", i, s.File, err)
			}
			noteSecret(c.Password)
			// The file is the one state.json recorded, or a pending
			// rotation replaced it (vault-renew settles which at start).
			if ino := state.Inode(s.File); ino != s.FileInode && !journaled[s.Name] {
				mismatches++
				t.Errorf("kill %d: %s does not hold the credential state.json records (lease %s): the credential in the file belongs to a lease nobody renews", i, s.File, s.LeaseID)
			}
			// Nothing renews while the test looks: a lease killed just
			// before its renewal (a second or so left) can end during these
			// checks on a loaded machine. That is its TTL at work, once the
			// end state.json names (whole seconds, never later than
			// Vault's) has passed; before it, a dead credential is an error.
			lapsedNow := func() bool { return !time.Now().Before(s.ExpiresAt) }
			if err := pgLogin(c.Username, c.Password); err != nil {
				if lapsedNow() {
					t.Logf("kill %d: the credential in %s no longer logs in, its lease at its end (%s) while the test looked: %v", i, s.File, s.ExpiresAt.Format(time.TimeOnly), err)
				} else {
					loginFailures++
					t.Errorf("kill %d: the credential in %s does not log in: %v", i, s.File, err)
				}
			}
			// Vault reports whole seconds: a 4s lease may show 0s left and
			// still be live; a gone one is an error.
			left, err := leaseTTL(s.LeaseID)
			if err != nil {
				if lapsedNow() {
					t.Logf("kill %d: lease %s of %s ended at its end (%s) while the test looked", i, s.LeaseID, s.Name, s.ExpiresAt.Format(time.TimeOnly))
				} else {
					t.Errorf("kill %d: lease %s of %s is not live in Vault: %v", i, s.LeaseID, s.Name, err)
				}
			}
			if s.Name == "ren" {
				renLeft, renAt = left, time.Now()
			}
		}
		if id := st.Lookup("ren").LeaseID; id != renLease {
			if gap := startedAt.Sub(prevRenAt); gap+time.Second > prevRenLeft {
				lapsed++
				t.Logf("kill %d: the renewable lease lapsed before vault-renew started (%s left by Vault's count, %s before the start) and was replaced", i, prevRenLeft, gap.Round(time.Millisecond))
			} else {
				t.Errorf("kill %d: the renewable credential changed lease (%s -> %s) with %s of it left when vault-renew started: a credential was lost or issued twice", i, renLease, id, (prevRenLeft - gap).Round(time.Millisecond))
			}
			renLease = id
		}
		rotLeases[st.Lookup("rot").LeaseID] = true
		for _, prefix := range prefixes {
			for _, id := range leasesUnder(t, prefix) {
				if _, seen := orphans[id]; known[id] || seen {
					continue
				}
				orphans[id] = time.Now()
				// No lease id can be journaled before Vault's answer
				// arrives: a kill between Vault issuing the lease and the
				// journal leaves a lease no state names, which dies at its
				// TTL or with the token (checked after vault-revoke below).
				// On a loaded machine the answer itself takes seconds to
				// come back. Anything older is a lease vault-renew lost
				// track of.
				if issued, err := leaseIssued(id); err == nil && killedAt.Sub(issued) < inFlightWindow {
					inFlight++
					t.Logf("kill %d: lease %s was issued %s before the kill and not yet journaled: it dies at its TTL or with the token", i, id, killedAt.Sub(issued).Round(time.Millisecond))
					continue
				}
				t.Errorf("kill %d: lease %s is live in Vault but state.json does not name it: orphaned", i, id)
			}
		}
		if targeted {
			// Let a restarted vault-renew finish a rotation undisturbed
			// before the next kill, and time how long it takes for the
			// file and state.json to agree again.
			s := start(t, "vault-renew", renewArgs, p.env...)
			began := time.Now()
			for !fileMatchesState(p, "rot") && time.Since(began) < 3*ttl {
				time.Sleep(50 * time.Millisecond)
			}
			converge = max(converge, time.Since(began))
			s.stop(10 * time.Second)
		}
	}
	elapsed := time.Since(began)

	// A last clean run, stopped with SIGTERM, then vault-revoke: every
	// lease, journaled, retiring or current, must be gone.
	s := start(t, "vault-renew", renewArgs, p.env...)
	time.Sleep(2 * time.Second)
	s.stop(10 * time.Second)
	if r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--log-level", "debug"}, p.env...); r.code != 0 {
		t.Fatalf("vault-revoke: exit %d\n%s", r.code, r.stderr)
	}
	var left []string
	deadline := time.Now().Add(3 * time.Second)
	for {
		left = left[:0]
		for _, prefix := range prefixes {
			left = append(left, leasesUnder(t, prefix)...)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("leases left after vault-revoke: %v", left)
	}
	what := "at random moments"
	if targeted {
		what = fmt.Sprintf("the instant a rotation replaced the file (%d hits; file and state agreed again at most %s after the restart)", hits, converge.Round(100*time.Millisecond))
	}
	figure(t, "crash", "vault-renew killed -9 %d times %s in %s (%s leases: one renewed, one replaced at its max TTL): renewable lease kept through every kill: %v (lapsed between runs, with under 1 s left at a restart: %d); rotations: %d; file/state mismatches: %d; credentials that did not log in: %d; orphaned leases: %d (and %d issued in the %s before a kill, not yet journaled); leases left after vault-revoke: %d",
		kills, what, elapsed.Round(time.Second), ttl, renLease == st0.Lookup("ren").LeaseID, lapsed, len(rotLeases)-1, mismatches, loginFailures, len(orphans)-inFlight, inFlight, inFlightWindow, len(left))
}

// fileMatchesState reports whether secret name's file is the one
// state.json records for it, with no rotation pending.
func fileMatchesState(p *pod, name string) bool {
	st, err := state.Load(p.stateDir)
	if err != nil || st.Lookup(name) == nil {
		return false
	}
	s := st.Lookup(name)
	return len(st.Pending) == 0 && state.Inode(s.File) == s.FileInode
}
