package state

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// The state directory is the trust boundary of podlease: vault-renew and
// vault-revoke act on what state.json and the token file say (which token
// to use, which Vault to send it to, which leases to renew or revoke).
// They trust a file in it only if nobody but the process's own user can
// have written it: a regular file (not a symlink, FIFO or device), owned
// by the process's uid, not writable by group or others, with one link.
// The directory itself must be owned by root (a Kubernetes emptyDir is
// root-owned and world-writable, and a non-root container cannot change
// that) or by the process's uid, and then not writable by group or others
// (vault-init makes it so). docs/state.md says why this is enough.

// MaxFile bounds what is read from the state dir, and so what Save
// writes: state.json of a pod with many templated secrets is a few
// hundred KiB at most.
const MaxFile = 4 << 20

// errUntrusted marks a file or directory refused by the trust rules.
var errUntrusted = errors.New("refusing to trust it")

// CheckDir applies the trust rules to the state directory itself.
func CheckDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state dir %s is not a directory: %w", dir, errUntrusted)
	}
	return dirTrust(dir, fi.Mode(), owner(fi), os.Getuid())
}

// dirTrust decides whether a state dir with this mode and owner can be
// trusted by a process running as uid.
func dirTrust(dir string, mode os.FileMode, ownerUID, uid int) error {
	switch {
	case ownerUID == 0:
		return nil
	case ownerUID != uid:
		return fmt.Errorf("state dir %s is owned by uid %d, not by this process's uid %d or root: another user could replace state.json or the token; %w", dir, ownerUID, uid, errUntrusted)
	case mode.Perm()&0o022 != 0:
		return fmt.Errorf("state dir %s is writable by group or others (mode %04o): run chmod go-w %s; %w", dir, mode.Perm(), dir, errUntrusted)
	}
	return nil
}

// PrepareDir is vault-init's part: a state dir owned by the process's
// (non-root) uid and writable by group or others is made private to its
// owner for writing (chmod go-w), then CheckDir applies the rules.
func PrepareDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if mode, change := tightened(fi.Mode(), owner(fi), os.Getuid()); change {
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("state dir %s: make it private (chmod go-w): %w", dir, err)
		}
	}
	return CheckDir(dir)
}

// tightened is the mode PrepareDir gives a dir, and whether it changes:
// group and other write removed from a dir of the process's own non-root
// uid. A root-owned dir (a Kubernetes emptyDir) is left as it is: other
// podlease containers of the pod may run as other uids of its fsGroup.
func tightened(mode os.FileMode, ownerUID, uid int) (os.FileMode, bool) {
	if ownerUID != uid || ownerUID == 0 || mode.Perm()&0o022 == 0 {
		return mode, false
	}
	return mode &^ 0o022, true
}

// fileTrust decides whether a file in the state dir can be trusted by a
// process running as uid.
func fileTrust(path string, fi os.FileInfo, uid int) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file (%s): %w", path, fi.Mode().Type(), errUntrusted)
	case owner(fi) != uid:
		return fmt.Errorf("%s is owned by uid %d, not by this process's uid %d: %w", path, owner(fi), uid, errUntrusted)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s is writable by group or others (mode %04o): %w", path, fi.Mode().Perm(), errUntrusted)
	case st != nil && st.Nlink > 1:
		return fmt.Errorf("%s has %d hard links: %w", path, st.Nlink, errUntrusted)
	}
	return nil
}

// ReadFile reads dir/name under the trust rules: the directory is checked,
// the file is opened without following a symlink (and without blocking on
// a FIFO) and checked before a byte is read. A missing file is reported as
// os.ErrNotExist (wrapped).
func ReadFile(dir, name string) ([]byte, error) {
	if err := CheckDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symlink: %w", path, errUntrusted)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := fileTrust(path, fi, os.Getuid()); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", path, MaxFile, errUntrusted)
	}
	return b, nil
}

// CheckSecretsDir checks that state.json names the secrets directory the
// command was given (--secrets-dir): the secret files vault-renew writes
// and vault-revoke removes are bounded by the flag, never by the file.
func (s *State) CheckSecretsDir(flag string) error {
	if filepath.Clean(s.SecretsDir) != filepath.Clean(flag) {
		return fmt.Errorf("state.json names secrets dir %q but --secrets-dir is %q: give vault-renew and vault-revoke the --secrets-dir vault-init had (PODLEASE_SECRETS_DIR)", s.SecretsDir, flag)
	}
	return nil
}

func owner(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
