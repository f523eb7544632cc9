package manifests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/podlease/podlease/e2e/testbed"
)

// repoRoot is the podlease checkout these tests check.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
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
