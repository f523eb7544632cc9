package manifests

import (
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

// repoFile returns the text of the repository file rel.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	return testbed.ReadFile(t, filepath.Join(repoRoot(t), rel))
}
