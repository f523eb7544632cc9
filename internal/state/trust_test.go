package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDirTrust: the state dir must be the process's own and private, or
// root's (a Kubernetes emptyDir, root-owned and world-writable).
func TestDirTrust(t *testing.T) {
	t.Parallel()
	const me = 65532
	for _, tc := range []struct {
		name  string
		mode  os.FileMode
		owner int
		ok    bool
	}{
		{"own, private", 0o700, me, true},
		{"own, world-readable", 0o755, me, true},
		{"own, group-writable", 0o770, me, false},
		{"own, world-writable", 0o777, me, false},
		{"root, kubelet emptyDir with fsGroup", os.ModeSetgid | 0o777, 0, true},
		{"root, emptyDir, the process runs as root", 0o777, 0, true},
		{"root, private", 0o700, 0, true},
		{"another user", 0o700, 1000, false},
		{"another user, world-writable", 0o777, 1000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := dirTrust("/vault/state", tc.mode, tc.owner, me)
			if (err == nil) != tc.ok {
				t.Fatalf("dirTrust = %v; want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errUntrusted) {
				t.Errorf("error %q is not marked untrusted", err)
			}
		})
	}
}

// TestReadFileRefusesTamperedFiles: every file podlease reads from the
// state dir (state.json, token, token.pending) is refused when someone
// other than the process's user could have put it there.
func TestReadFileRefusesTamperedFiles(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Fatal("this test needs root to give files another owner; run make unit as root")
	}
	secret := filepath.Join(t.TempDir(), "root-only")
	if err := os.WriteFile(secret, []byte("root-only content"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(path string) error
		want  string
	}{
		{"regular 0600", func(p string) error { return os.WriteFile(p, []byte("x"), 0o600) }, ""},
		{"symlink to a root-only file", func(p string) error { return os.Symlink(secret, p) }, "is a symlink"},
		{"dangling symlink", func(p string) error { return os.Symlink("/nonexistent", p) }, "is a symlink"},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "not a regular file"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, "not a regular file"},
		{"another owner", func(p string) error {
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				return err
			}
			return os.Chown(p, 1234, 1234)
		}, "owned by uid 1234"},
		{"group-writable", func(p string) error {
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				return err
			}
			return os.Chmod(p, 0o620)
		}, "writable by group or others"},
		{"hard link", func(p string) error {
			if err := os.WriteFile(p+".orig", []byte("x"), 0o600); err != nil {
				return err
			}
			return os.Link(p+".orig", p)
		}, "hard links"},
	} {
		for _, name := range []string{FileName, TokenName, "token.pending"} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				if err := tc.setup(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
				b, err := ReadFile(dir, name)
				if tc.want == "" {
					if err != nil || string(b) != "x" {
						t.Fatalf("ReadFile = %q, %v; want x", b, err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("ReadFile = %v; want an error saying %q", err, tc.want)
				}
				if strings.Contains(string(b), "root-only") {
					t.Error("ReadFile returned the symlink target's content")
				}
			})
		}
	}
}

// TestLoadAndReadTokenUseTheTrustRules: state.json and the token file are
// read through ReadFile; a tampered state dir is refused as a whole.
func TestLoadAndReadTokenUseTheTrustRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("hvs.elsewhere"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, TokenName)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadToken(dir); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("ReadToken through a symlink = %v; want refused", err)
	}
	if err := os.Symlink(target, filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("Load through a symlink = %v; want refused", err)
	}
	foreign := t.TempDir()
	if err := os.Chown(foreign, 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(foreign); err == nil || !strings.Contains(err.Error(), "owned by uid 1234") {
		t.Errorf("Load from another user's dir = %v; want refused, naming the owner", err)
	}
	if _, err := Lock(t.Context(), foreign); err == nil {
		t.Error("Lock in another user's dir succeeded; want refused")
	}
}

// TestCheckSecretsDir: the secrets dir comes from the flag; a state.json
// naming another one is refused.
func TestCheckSecretsDir(t *testing.T) {
	t.Parallel()
	s := &State{SecretsDir: "/vault/secrets/"}
	if err := s.CheckSecretsDir("/vault/secrets"); err != nil {
		t.Errorf("same dir: %v", err)
	}
	s.SecretsDir = "/etc"
	if err := s.CheckSecretsDir("/vault/secrets"); err == nil || !strings.Contains(err.Error(), "--secrets-dir") {
		t.Errorf("other dir: %v; want an error naming --secrets-dir", err)
	}
}

// TestTightened: vault-init makes a state dir of its own private for
// writing, and leaves root's (a kubelet emptyDir) alone.
func TestTightened(t *testing.T) {
	t.Parallel()
	const me = 65532
	for _, tc := range []struct {
		name   string
		mode   os.FileMode
		owner  int
		uid    int
		want   os.FileMode
		change bool
	}{
		{"own, world-writable", 0o777, me, me, 0o755, true},
		{"own, setgid group-writable", os.ModeSetgid | 0o770, me, me, os.ModeSetgid | 0o750, true},
		{"own, private", 0o700, me, me, 0o700, false},
		{"root's emptyDir, non-root process", os.ModeSetgid | 0o777, 0, me, os.ModeSetgid | 0o777, false},
		{"root's emptyDir, root process", 0o777, 0, 0, 0o777, false},
		{"another user's", 0o777, 1000, me, 0o777, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, change := tightened(tc.mode, tc.owner, tc.uid)
			if got != tc.want || change != tc.change {
				t.Errorf("tightened = %v, %v; want %v, %v", got, change, tc.want, tc.change)
			}
		})
	}
}
