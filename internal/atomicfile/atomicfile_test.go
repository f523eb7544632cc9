package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// entries lists dir, to show that no temporary file was left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestExactModeRegardlessOfUmask changes the process umask, so it does not
// run in parallel with anything.
func TestExactModeRegardlessOfUmask(t *testing.T) {
	for _, umask := range []int{0o022, 0o077, 0o777, 0} {
		old := syscall.Umask(umask)
		for _, perm := range []os.FileMode{0o440, 0o400, 0o600, 0o644, 0o666, 0o755} {
			path := filepath.Join(t.TempDir(), "secret")
			err := Write(path, []byte("x"), perm)
			if err != nil {
				syscall.Umask(old)
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				syscall.Umask(old)
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != perm {
				t.Errorf("umask %#o: mode %#o, want %#o", umask, got, perm)
			}
		}
		syscall.Umask(old)
	}
}

func TestWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir, path string) // what is at path before
		check func(t *testing.T, dir string)       // what must still hold after
	}{
		{name: "new file"},
		{
			name: "replaces a file, and its mode",
			setup: func(t *testing.T, _, path string) {
				if err := os.WriteFile(path, []byte("old content that is longer"), 0o666); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "replaces a symlink, not its target",
			setup: func(t *testing.T, dir, path string) {
				if err := os.WriteFile(filepath.Join(dir, "victim"), []byte("do not touch"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("victim", path); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, dir string) {
				b, err := os.ReadFile(filepath.Join(dir, "victim"))
				if err != nil || string(b) != "do not touch" {
					t.Errorf("the link's target now holds %q (err %v)", b, err)
				}
				fi, _ := os.Stat(filepath.Join(dir, "victim"))
				if fi.Mode().Perm() != 0o644 {
					t.Errorf("the link's target mode changed to %#o", fi.Mode().Perm())
				}
			},
		},
		{
			name: "replaces a dangling symlink without creating its target",
			setup: func(t *testing.T, dir, path string) {
				if err := os.Symlink(filepath.Join(dir, "elsewhere"), path); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, dir string) {
				if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); !os.IsNotExist(err) {
					t.Errorf("the dangling link's target was created (err %v)", err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "db")
			if tc.setup != nil {
				tc.setup(t, dir, path)
			}
			before := len(entries(t, dir))
			if err := Write(path, []byte("new"), 0o440); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o440 {
				t.Errorf("%s is %v, want a regular file with mode 0440", path, fi.Mode())
			}
			if b, _ := os.ReadFile(path); string(b) != "new" {
				t.Errorf("content %q, want %q", b, "new")
			}
			if after := entries(t, dir); len(after) != max(before, 1) {
				t.Errorf("dir holds %v: a temporary file was left behind", after)
			}
			if tc.check != nil {
				tc.check(t, dir)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the path to write
	}{
		{
			name:  "directory does not exist",
			setup: func(t *testing.T, dir string) string { return filepath.Join(dir, "missing", "db") },
		},
		{
			name: "a directory is in the way",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "db")
				if err := os.MkdirAll(filepath.Join(p, "child"), 0o755); err != nil {
					t.Fatal(err)
				}
				return p
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := tc.setup(t, dir)
			before := entries(t, dir)
			err := Write(path, []byte("secret"), 0o440)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if after := entries(t, dir); len(after) != len(before) {
				t.Errorf("dir held %v, now %v: a temporary file was left behind", before, after)
			}
		})
	}
}

// TestReaderSeesOldOrNew reads the file while it is being replaced: every
// read must see one whole version.
func TestReaderSeesOldOrNew(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "db")
	a := bytes.Repeat([]byte("a"), 1<<20)
	b := bytes.Repeat([]byte("b"), 1<<19)
	if err := Write(path, a, 0o440); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
				t.Errorf("read %d bytes that are neither version", len(got))
				return
			}
		}
	}()
	for i := range 30 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := Write(path, data, 0o440); err != nil {
			t.Error(err)
			break
		}
	}
	close(done)
	wg.Wait()
}

func TestRemoveStale(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "app[1]") // a glob would not match itself
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "db")
	for _, name := range []string{"db", ".db.tmp-123", ".db.tmp-456", ".dbx.tmp-1", ".other.tmp-9"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed := RemoveStale(path)
	if len(removed) != 2 {
		t.Errorf("removed %v; want the two temporary files of db", removed)
	}
	left, _ := os.ReadDir(dir)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".dbx.tmp-1 .other.tmp-9 db" {
		t.Errorf("left %v; want db and the other files' temporary files", names)
	}
}
