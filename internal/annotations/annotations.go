// Package annotations reads the pod's annotations from a downward API file
// (a volume item with fieldRef metadata.annotations). The kubelet writes
// one key="value" line per annotation, keys sorted, each value quoted the
// way Go's %q does (strconv.Quote), so a multi-line value stays on one
// line with its newlines escaped.
package annotations

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MaxSize bounds the file: Kubernetes caps a pod's annotations at 256 KiB
// in total, so anything much larger is not a downward API file.
const MaxSize = 1 << 20

// Read reads and parses the annotations file at path. It refuses what is
// not a regular file or is larger than MaxSize, and names path in every
// error.
func Read(path string) (map[string]string, error) {
	fi, err := os.Stat(path) // follows the kubelet's ..data symlinks
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: want a downward API volume item with fieldPath metadata.annotations", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a downward API annotations file", path, MaxSize)
	}
	m, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Parse decodes the kubelet's format: key="value" lines, the value a Go
// quoted string. Empty lines are skipped; a key given twice, a line
// without '=' or a value that is not a complete quoted string is an error
// naming the line.
func Parse(text string) (map[string]string, error) {
	m := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		n := i + 1
		key, quoted, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("line %d: want key=\"value\"", n)
		}
		if strings.ContainsAny(key, " \t\"") {
			return nil, fmt.Errorf("line %d: key %q is not an annotation key", n, key)
		}
		if !strings.HasPrefix(quoted, `"`) {
			return nil, fmt.Errorf("line %d (%s): want the value in double quotes, as the kubelet writes it", n, key)
		}
		value, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): the value is not one complete Go quoted string", n, key)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("line %d: %s is given twice", n, key)
		}
		m[key] = value
	}
	return m, nil
}
