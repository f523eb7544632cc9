package manifests

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// repoRoot is the podlease checkout this module lives in (test/manifests).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Dockerfile")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// tool finds a program: the path in env if set (it must then exist), else
// name on PATH. ok is false when neither is there.
func tool(t *testing.T, env, name string) (path string, ok bool) {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p, true
	}
	p, err := exec.LookPath(name)
	return p, err == nil
}

// readFile returns the text of the repository file rel.
func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
