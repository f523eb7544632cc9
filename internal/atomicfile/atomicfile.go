// Package atomicfile writes files so that a reader sees either the old
// content or the new, never a mix: a temporary file in the same directory,
// fsync, rename over the target, fsync of the directory.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Write replaces path with data, created with exactly perm. A symlink at
// path is replaced, never followed. On error the target is untouched and
// no temporary file is left behind.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes 0600; chmod sets the exact mode regardless of umask.
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// RemoveStale removes the temporary files Write may have left for path
// when the process writing it was killed (".NAME.tmp-*" beside it), and
// returns their names. Only a process that alone writes path may call it.
func RemoveStale(path string) []string {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, _ := os.ReadDir(dir) // names, not a glob: dir may hold [ or *
	var removed []string
	for _, e := range entries {
		if m := filepath.Join(dir, e.Name()); strings.HasPrefix(e.Name(), "."+base+".tmp-") && os.Remove(m) == nil {
			removed = append(removed, m)
		}
	}
	return removed
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
