package testbed

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestPodleaseImageMatchesDockerfile packs the image the Kubernetes tests
// run and checks it against the Dockerfile: the same build flags, binaries
// at the same paths, the same user, entrypoint and labels, a CA bundle and
// the nonroot user of the distroless base. Change the Dockerfile, and this
// test says what the packed image must follow.
func TestPodleaseImageMatchesDockerfile(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(df), "\\\n", " ")
	directive := func(name string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^`+name+`\s+(.+)$`).FindAllStringSubmatch(text, -1)
		if len(m) == 0 {
			t.Fatalf("Dockerfile has no %s", name)
		}
		return strings.TrimSpace(m[len(m)-1][1])
	}

	// The build line.
	run := regexp.MustCompile(`(?m)^RUN .*go build.*$`).FindString(text)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "` + ProductBuildFlags[2] + `${VERSION}"`} {
		if !strings.Contains(run, want) {
			t.Errorf("the Dockerfile's go build lacks %s, which the packed image's build uses: %s", want, run)
		}
	}
	var built []string
	for _, m := range regexp.MustCompile(`\./cmd/([a-z-]+)`).FindAllStringSubmatch(run, -1) {
		built = append(built, m[1])
	}
	if !slices.Equal(built, ProductBinaries) {
		t.Errorf("the Dockerfile builds %v, the packed image holds %v", built, ProductBinaries)
	}
	copyLine := directive("COPY --from=build")
	dest := strings.Fields(copyLine)[1]
	if !strings.HasPrefix(copyLine, "/out/ ") || dest != "/usr/local/bin/" {
		t.Errorf("Dockerfile COPY %q: the packed image puts the binaries in /usr/local/bin/", copyLine)
	}
	if !strings.Contains(directive("FROM"), "distroless/static") || !strings.Contains(directive("FROM"), ":nonroot") {
		t.Errorf("the Dockerfile's base is no longer distroless static:nonroot (%s): update baseFiles", directive("FROM"))
	}
	var entry []string
	if err := json.Unmarshal([]byte(directive("ENTRYPOINT")), &entry); err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, m := range regexp.MustCompile(`(org\.opencontainers\.image\.[a-z]+)=`).FindAllStringSubmatch(directive("LABEL"), -1) {
		labels = append(labels, m[1])
	}

	// The packed image.
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := BuildProduct(ctx, dir, "test"); err != nil {
		t.Fatal(err)
	}
	spec, err := PodleaseImageSpec(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "image.tar")
	if err := WriteImage(file, spec); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != directive("USER") {
		t.Errorf("image user %q, Dockerfile USER %q", cf.Config.User, directive("USER"))
	}
	if !slices.Equal(cf.Config.Entrypoint, entry) {
		t.Errorf("image entrypoint %v, Dockerfile %v", cf.Config.Entrypoint, entry)
	}
	var got []string
	for k := range cf.Config.Labels {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(labels)
	if !slices.Equal(got, labels) {
		t.Errorf("image labels %v, Dockerfile %v", got, labels)
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	contents := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimSuffix(h.Name, "/")] = h
		b, _ := io.ReadAll(tr)
		contents["/"+h.Name] = b
	}
	for _, b := range built {
		p := dest + b
		h, ok := files[p]
		if !ok || h.Mode&0o111 == 0 {
			t.Errorf("%s missing or not executable", p)
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(contents[p]))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", p)
			}
		}
	}
	if len(contents[caBundlePath]) == 0 {
		t.Errorf("no CA bundle at %s", caBundlePath)
	}
	if !strings.Contains(string(contents["/etc/passwd"]), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd lacks nonroot (65532)")
	}
	t.Logf("packed image: user %s, entrypoint %v, %v in %s, CA bundle, labels %v: as the Dockerfile says", cf.Config.User, cf.Config.Entrypoint, built, dest, got)
}
