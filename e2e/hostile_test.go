package e2e

// Hostile and malformed input: broken state files, directories that
// cannot be written, a full disk, planted symlinks, odd secret names,
// files that never end. Every case must end with a clear message and the
// right exit code, quickly, with nothing written outside the pod's
// directories and no credential left alive in Vault.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/podlease/podlease/internal/state"

	"github.com/podlease/podlease/e2e/testbed"
)

// tree lists every path under dir with its size and mode, so that a test
// can tell whether anything was written or changed.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v", p, fi.Mode())
		if !fi.IsDir() {
			line += fmt.Sprintf(" %d %d", fi.Size(), fi.ModTime().UnixNano())
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// mountTmpfs mounts a tmpfs of size bytes on dir until the test ends.
// Tests run as root here; a refused mount fails the test (it is not a
// reason to skip it).
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s (the full-disk cases need root or CAP_SYS_ADMIN): %v", size, dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// readOnlyBind makes dir a read-only bind mount of itself until the test
// ends: even root cannot write to it.
func readOnlyBind(t *testing.T, dir string) {
	t.Helper()
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	if err := syscall.Mount("", dir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
}

// fill writes a file into dir until the file system is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// hostileCase is one bad input to vault-init.
type hostileCase struct {
	name string
	// setup prepares the pod and returns vault-init's arguments.
	setup func(t *testing.T, p *pod, outside string) []string
	code  int
	// mentions must all appear in stderr.
	mentions []string
	// check runs after vault-init, for what the case must leave behind.
	check func(t *testing.T, p *pod, outside string)
}

// TestHostileInit feeds vault-init broken and hostile input and checks
// that it refuses (or survives) each cleanly: exit code, a message naming
// the problem, at most a few seconds, nothing written outside the pod's
// directories, and no lease left in Vault after a failure.
func TestHostileInit(t *testing.T) {
	t.Parallel()
	const role = "hostile"
	if err := bed.CreateDBRole(role, time.Hour, time.Hour); err != nil {
		t.Fatal(err)
	}
	prefix := "database/creds/" + role + "/"
	t.Cleanup(func() { revokePrefix(t, prefix) })
	db := "db=database/creds/" + role
	writeState := func(t *testing.T, p *pod, content string) {
		if err := os.WriteFile(filepath.Join(p.stateDir, state.FileName), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	validState := `{"version":1,"vault_addr":"` + bed.VaultAddr + `","auth":{"method":"kubernetes","mount":"kubernetes"},"token":{"accessor":"x","ttl":60,"renewable":true,"issued_at":"2025-01-01T00:00:00Z","expires_at":"2025-01-01T00:01:00Z","owned":true},"secrets_dir":"/nonexistent","secrets":[],"updated_at":"2025-01-01T00:00:00Z"}`
	replaced := func(t *testing.T, p *pod, _ string) {
		assertCompleteSet(t, p)
		noteSecret(p.token())
	}
	odd := func(name string) hostileCase {
		kv := name + "=database/creds/" + role
		return hostileCase{
			name:     fmt.Sprintf("secret name %q", name),
			setup:    func(t *testing.T, p *pod, _ string) []string { return p.initArgs("--secret", kv) },
			code:     2,
			mentions: []string{fmt.Sprintf("--secret %q", kv)},
			check:    func(t *testing.T, p *pod, _ string) { assertNothingLeft(t, p) },
		}
	}
	cases := []hostileCase{
		odd("../x"), odd(""), odd(".."), odd("."), odd(".hidden"), odd("a/b"), odd("/etc/passwd"),
		odd(strings.Repeat("a", 129)), odd("dé"), odd("🔑"), odd("x\ny"), odd("x y"), odd("-x"),
		{
			name: "corrupt state.json from an earlier run",
			setup: func(t *testing.T, p *pod, _ string) []string {
				writeState(t, p, "{\x00garbage")
				return p.initArgs("--secret", db)
			},
			mentions: []string{"is not valid state", "replacing its state anyway"},
			check:    replaced,
		},
		{
			name: "truncated state.json from an earlier run",
			setup: func(t *testing.T, p *pod, _ string) []string {
				writeState(t, p, validState[:len(validState)/2])
				return p.initArgs("--secret", db)
			},
			mentions: []string{"is not valid state", "unexpected end of JSON input"},
			check:    replaced,
		},
		{
			name: "state.json from a future version",
			setup: func(t *testing.T, p *pod, _ string) []string {
				writeState(t, p, strings.Replace(validState, `"version":1`, `"version":99`, 1))
				return p.initArgs("--secret", db)
			},
			mentions: []string{"format version 99, this build reads versions 1 to 2"},
			check:    replaced,
		},
		{
			name: "secrets dir is a file",
			setup: func(t *testing.T, p *pod, _ string) []string {
				if err := os.Remove(p.secretsDir); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p.secretsDir, []byte("not a dir"), 0o644); err != nil {
					t.Fatal(err)
				}
				return p.initArgs("--secret", db)
			},
			code: 1, mentions: []string{"create " + "SECRETS", "not a directory"},
		},
		{
			name: "state dir is a file",
			setup: func(t *testing.T, p *pod, _ string) []string {
				if err := os.Remove(p.stateDir); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p.stateDir, []byte("not a dir"), 0o644); err != nil {
					t.Fatal(err)
				}
				return p.initArgs("--secret", db)
			},
			code: 1, mentions: []string{"create " + "STATE", "not a directory"},
		},
		{
			name: "read-only secrets dir",
			setup: func(t *testing.T, p *pod, _ string) []string {
				readOnlyBind(t, p.secretsDir)
				return p.initArgs("--secret", db)
			},
			code:     1,
			mentions: []string{"SECRETS/db", "read-only file system", "revoked the token"},
			check:    func(t *testing.T, p *pod, _ string) { assertNothingLeft(t, p) },
		},
		{
			name: "read-only state dir",
			setup: func(t *testing.T, p *pod, _ string) []string {
				readOnlyBind(t, p.stateDir)
				return p.initArgs("--secret", db)
			},
			code:     1,
			mentions: []string{"STATE", "read-only file system", "revoked the token"},
			check:    func(t *testing.T, p *pod, _ string) { assertNothingLeft(t, p) },
		},
		{
			name: "full secrets dir (16 KiB tmpfs, filled)",
			setup: func(t *testing.T, p *pod, _ string) []string {
				mountTmpfs(t, p.secretsDir, 16<<10)
				fill(t, p.secretsDir)
				return p.initArgs("--secret", db, "--secret", "kv=secret/data/app")
			},
			code:     1,
			mentions: []string{"SECRETS/", "no space left on device", "revoked the token"},
			check: func(t *testing.T, p *pod, _ string) {
				if names := dirEntries(t, p.secretsDir); len(names) != 1 || names[0] != "filler" {
					t.Errorf("the full secrets dir holds %v, want only the filler", names)
				}
			},
		},
		{
			name: "full state dir (16 KiB tmpfs, filled)",
			setup: func(t *testing.T, p *pod, _ string) []string {
				mountTmpfs(t, p.stateDir, 16<<10)
				fill(t, p.stateDir)
				return p.initArgs("--secret", db)
			},
			code:     1,
			mentions: []string{"STATE/", "no space left on device", "revoked the token"},
			check: func(t *testing.T, p *pod, _ string) {
				if names := dirEntries(t, p.stateDir); len(names) != 1 || names[0] != "filler" {
					t.Errorf("the full state dir holds %v, want only the filler", names)
				}
				if names := dirEntries(t, p.secretsDir); len(names) > 0 {
					t.Errorf("secret files written although the state could not be: %v", names)
				}
			},
		},
		{
			name: "symlinks planted at the secret file, token and state.json",
			setup: func(t *testing.T, p *pod, outside string) []string {
				for _, l := range []string{filepath.Join(p.secretsDir, "db"), filepath.Join(p.secretsDir, "kv"), filepath.Join(p.stateDir, "token"), filepath.Join(p.stateDir, "state.json")} {
					victim := filepath.Join(outside, "victim-"+filepath.Base(l))
					if err := os.WriteFile(victim, []byte("VICTIM"), 0o644); err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink(victim, l); err != nil {
						t.Fatal(err)
					}
				}
				return p.initArgs("--secret", db, "--secret", "kv=secret/data/app")
			},
			check: func(t *testing.T, p *pod, _ string) {
				assertCompleteSet(t, p)
				noteSecret(p.token())
				for _, l := range []string{filepath.Join(p.secretsDir, "db"), filepath.Join(p.stateDir, "token"), filepath.Join(p.stateDir, "state.json")} {
					if fi, err := os.Lstat(l); err != nil || !fi.Mode().IsRegular() {
						t.Errorf("%s is not a regular file after vault-init: %v", l, err)
					}
				}
			},
		},
		{
			name: "symlink planted at the state dir's lock file",
			setup: func(t *testing.T, p *pod, outside string) []string {
				if err := os.Symlink(filepath.Join(outside, "created-by-the-lock"), filepath.Join(p.stateDir, ".lock")); err != nil {
					t.Fatal(err)
				}
				return p.initArgs("--secret", db)
			},
			code:     1,
			mentions: []string{"lock state dir", "too many levels of symbolic links"},
			check: func(t *testing.T, p *pod, _ string) {
				if names := dirEntries(t, p.secretsDir); len(names) > 0 {
					t.Errorf("secret files left: %v", names)
				}
			},
		},
		{
			name: "FIFO as the service-account token",
			setup: func(t *testing.T, p *pod, _ string) []string {
				f := filepath.Join(p.dir, "fifo")
				if err := syscall.Mkfifo(f, 0o600); err != nil {
					t.Fatal(err)
				}
				return append(p.initArgs("--secret", db), "--jwt-file", f)
			},
			code: 1, mentions: []string{"--jwt-file", "fifo", "not a regular file"},
		},
		{
			name: "/dev/zero as the service-account token",
			setup: func(t *testing.T, p *pod, _ string) []string {
				return append(p.initArgs("--secret", db), "--jwt-file", "/dev/zero")
			},
			code:     1,
			mentions: []string{"--jwt-file /dev/zero", "not a regular file"},
		},
		{
			name: "FIFO as a template",
			setup: func(t *testing.T, p *pod, _ string) []string {
				f := filepath.Join(p.dir, "fifo")
				if err := syscall.Mkfifo(f, 0o600); err != nil {
					t.Fatal(err)
				}
				return p.initArgs("--secret", db, "--template", "db="+f)
			},
			code: 2, mentions: []string{"--template", "fifo", "not a regular file"},
		},
		{
			name: "/dev/zero as a template",
			setup: func(t *testing.T, p *pod, _ string) []string {
				return p.initArgs("--secret", db, "--template", "db=/dev/zero")
			},
			code:     2,
			mentions: []string{`--template "db=/dev/zero"`, "not a regular file"},
		},
		{
			name: "2 MiB template",
			setup: func(t *testing.T, p *pod, _ string) []string {
				f := filepath.Join(p.dir, "huge.tmpl")
				if err := os.WriteFile(f, make([]byte, 2<<20), 0o644); err != nil {
					t.Fatal(err)
				}
				return p.initArgs("--secret", db, "--template", "db="+f)
			},
			code: 2, mentions: []string{"huge.tmpl", "at most 1048576"},
		},
		{
			name: "file mode with setuid bit",
			setup: func(t *testing.T, p *pod, _ string) []string {
				return p.initArgs("--secret", db, "--file-mode", "4755")
			},
			code:     2,
			mentions: []string{"--file-mode", `"4755"`},
		},
		{
			name: "secrets dir and state dir the same",
			setup: func(t *testing.T, p *pod, _ string) []string {
				return append(p.initArgs("--secret", db), "--state-dir", p.secretsDir)
			},
			code: 2, mentions: []string{"--secrets-dir and --state-dir are both"},
		},
	}
	var clean atomic.Int32
	concurrently(t, cases, func(c hostileCase) string { return c.name }, func(t *testing.T, c hostileCase) {
		p := newPod(t)
		outside := t.TempDir()
		if err := os.WriteFile(filepath.Join(outside, "bystander"), []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
		args := c.setup(t, p, outside)
		beforeOutside, beforePod := tree(t, outside), dirEntries(t, p.dir)
		r := runWith(t, "vault-init", args, runOpts{env: p.env, timeout: 30 * time.Second})
		if r.code != c.code {
			t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, c.code, r.stderr)
		}
		for _, m := range c.mentions {
			m = strings.ReplaceAll(strings.ReplaceAll(m, "SECRETS", p.secretsDir), "STATE", p.stateDir)
			if !strings.Contains(r.stderr, m) {
				t.Errorf("stderr should mention %q:\n%s", m, r.stderr)
			}
		}
		if r.elapsed > 5*time.Second {
			t.Errorf("took %s: bad input must be refused quickly", r.elapsed.Round(time.Millisecond))
		}
		if after := tree(t, outside); after != beforeOutside {
			t.Errorf("vault-init changed files outside the pod's directories:\nbefore:\n%s\nafter:\n%s", beforeOutside, after)
		}
		if after := dirEntries(t, p.dir); strings.Join(after, ",") != strings.Join(beforePod, ",") {
			t.Errorf("vault-init wrote next to the secrets and state dirs: %v -> %v", beforePod, after)
		}
		if c.check != nil {
			c.check(t, p, outside)
		}
		if !t.Failed() {
			clean.Add(1)
		}
	})
	// A failed run revokes its token; a run that succeeded replaced its
	// predecessor's; so what is left are the leases of the runs that
	// succeeded, which hold state.json in their pods.
	figure(t, "hostile", "vault-init: %d/%d hostile or malformed inputs handled cleanly (exit code, message naming the problem, under 5s, nothing written outside the pod's directories)",
		clean.Load(), len(cases))
}

// TestHostileState gives vault-renew and vault-revoke state dirs that
// vault-init never wrote: missing, corrupt, truncated, from a future
// version, a directory where the file should be, and a state.json that
// names a secret file outside its secrets dir.
func TestHostileState(t *testing.T) {
	t.Parallel()
	type stateCase struct {
		name     string
		content  string // state.json; "" for none, "DIR" for a directory
		renew    []string
		revoke   []string
		revokeOK bool
	}
	valid := `{"version":1,"vault_addr":"` + bed.VaultAddr + `","auth":{"method":"kubernetes","mount":"kubernetes"},"token":{"accessor":"x","ttl":60,"renewable":true,"issued_at":"2025-01-01T00:00:00Z","expires_at":"2025-01-01T00:01:00Z","owned":true},"secrets_dir":"/x","secrets":[],"updated_at":"2025-01-01T00:00:00Z"}`
	cases := []stateCase{
		{name: "no state", content: "", renew: []string{"no state", "vault-init must run first"}, revokeOK: true},
		{name: "corrupt", content: "{\x00garbage", renew: []string{"is not valid state", "run vault-init again"}, revoke: []string{"is not valid state"}},
		{name: "truncated", content: valid[:len(valid)/2], renew: []string{"is not valid state", "unexpected end of JSON input"}, revoke: []string{"unexpected end of JSON input"}},
		{name: "future version", content: strings.Replace(valid, `"version":1`, `"version":99`, 1), renew: []string{"format version 99, this build reads versions 1 to 2"}, revoke: []string{"format version 99"}},
		{name: "unknown field", content: strings.Replace(valid, `"version":1`, `"version":1,"evil":true`, 1), renew: []string{"unknown field", "evil"}, revoke: []string{"unknown field", "evil"}},
		{name: "empty file", content: " ", renew: []string{"is not valid state"}, revoke: []string{"is not valid state"}},
		{name: "directory", content: "DIR", renew: []string{"is not a regular file"}, revoke: []string{"is not a regular file"}},
	}
	var clean atomic.Int32
	concurrently(t, cases, func(c stateCase) string { return c.name }, func(t *testing.T, c stateCase) {
		p := newPod(t)
		switch c.content {
		case "":
		case "DIR":
			if err := os.Mkdir(filepath.Join(p.stateDir, state.FileName), 0o700); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(filepath.Join(p.stateDir, state.FileName), []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(p.stateDir, state.TokenName), []byte("hvs.not-a-real-token"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runWith(t, "vault-renew", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--listen", "", "--log-level", "debug"}, runOpts{env: p.env, timeout: 20 * time.Second})
		if r.code != 1 {
			t.Errorf("vault-renew: exit %d, want 1:\n%s", r.code, r.stderr)
		}
		if m := mentionsAll(r.stderr, c.renew...); len(m) > 0 {
			t.Errorf("vault-renew: stderr lacks %q:\n%s", m, r.stderr)
		}
		r = runWith(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir, "--log-level", "debug"}, runOpts{env: p.env, timeout: 20 * time.Second})
		want := 1
		if c.revokeOK {
			want = 0
		}
		if r.code != want {
			t.Errorf("vault-revoke: exit %d, want %d:\n%s", r.code, want, r.stderr)
		}
		if m := mentionsAll(r.stderr, c.revoke...); len(m) > 0 {
			t.Errorf("vault-revoke: stderr lacks %q:\n%s", m, r.stderr)
		}
		if !t.Failed() {
			clean.Add(1)
		}
	})
	figure(t, "hostile", "vault-renew and vault-revoke: %d/%d broken state dirs refused cleanly (exit 1 naming the file and the fix; none for a missing state with vault-revoke)", clean.Load(), len(cases))
}

// TestHostileStateOutsideFiles: a state.json edited to name a secret file
// outside its secrets dir must not make vault-revoke delete that file.
func TestHostileStateOutsideFiles(t *testing.T) {
	t.Parallel()
	p := newPod(t)
	p.mustInit("--secret", "kv=secret/data/app")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := state.Load(p.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	st.Secrets[0].File = victim
	if err := state.Save(p.stateDir, st); err != nil {
		t.Fatal(err)
	}
	r := run(t, "vault-revoke", []string{"--state-dir", p.stateDir, "--secrets-dir", p.secretsDir}, p.env...)
	_, err = os.Stat(victim)
	if err != nil {
		t.Errorf("vault-revoke deleted %s, outside the secrets dir %s, because state.json named it (exit %d):\n%s", victim, st.SecretsDir, r.code, r.stderr)
	}
	figure(t, "hostile", "vault-revoke with a state.json naming a file outside its secrets dir: file kept: %v", err == nil)
}

// TestHostileUnprivileged runs vault-init as an unprivileged user (uid
// 65534) on directories that user cannot write: it must stop before any
// credential is issued, or revoke what it got, and say which directory.
func TestHostileUnprivileged(t *testing.T) {
	t.Parallel()
	const role = "unpriv"
	if err := bed.CreateDBRole(role, time.Hour, time.Hour); err != nil {
		t.Fatal(err)
	}
	prefix := "database/creds/" + role + "/"
	t.Cleanup(func() { revokePrefix(t, prefix) })
	// Everything the user must reach: a world-readable tree.
	base, err := os.MkdirTemp("", "podlease-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "vault-init")
	if b, err := os.ReadFile(bins["vault-init"]); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	jwt := filepath.Join(base, "jwt")
	if err := os.WriteFile(jwt, []byte(testbed.ReadFile(t, p.jwtFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}
	type permCase struct {
		name             string
		secretsW, stateW bool
		mention          string
	}
	cases := []permCase{
		{"state dir not writable", true, false, "state"},
		{"secrets dir not writable", false, true, "secrets"},
	}
	var clean atomic.Int32
	concurrently(t, cases, func(c permCase) string { return c.name }, func(t *testing.T, c permCase) {
		dir, err := os.MkdirTemp(base, "pod-")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		secretsDir, stateDir := filepath.Join(dir, "secrets"), filepath.Join(dir, "state")
		for d, writable := range map[string]bool{secretsDir: c.secretsW, stateDir: c.stateW} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if writable {
				if err := os.Chown(d, 65534, 65534); err != nil {
					t.Fatal(err)
				}
			}
		}
		before := tree(t, dir)
		r := runBinary(t, bin, []string{"--role", "app", "--jwt-file", jwt, "--secret", "db=database/creds/" + role,
			"--secrets-dir", secretsDir, "--state-dir", stateDir, "--timeout", "10s"}, runOpts{env: p.env, cred: nobody})
		if r.code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", r.code, r.stderr)
		}
		if m := mentionsAll(r.stderr, filepath.Join(dir, c.mention), "permission denied", "revoked the token"); len(m) > 0 {
			t.Errorf("stderr lacks %q:\n%s", m, r.stderr)
		}
		if after := tree(t, dir); after != before {
			t.Errorf("files changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if !t.Failed() {
			clean.Add(1)
		}
	})
	left := leasesLeft(t, prefix, 5*time.Second)
	if len(left) > 0 {
		t.Errorf("leases left by the failed runs: %v", left)
	}
	figure(t, "hostile", "vault-init as uid 65534 on directories it cannot write: %d/%d refused cleanly (exit 1, directory named); leases left: %d", clean.Load(), len(cases), len(left))
}
