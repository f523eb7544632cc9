package testbed

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Images the node runs, packed without Docker.
const (
	// PodleaseImage holds vault-init, vault-renew and vault-revoke as the
	// Dockerfile lays them out.
	PodleaseImage = "podlease.test/podlease:e2e"
	// AppImage holds the test app (e2e/cmd/kubeapp), which runs as AppUID.
	AppImage = "podlease.test/app:e2e"
	// VaultImage holds the vault binary (for Vault Agent) on the same base
	// as PodleaseImage.
	VaultImage = "podlease.test/vault:e2e"
	// AppUID is the app's user: not podlease's 65532, so reading the
	// secret file depends on the pod's fsGroup.
	AppUID = 1000
)

// Binaries of the product, and how the Dockerfile builds them: the e2e
// images are built the same way (a test compares this with the Dockerfile).
var (
	ProductBinaries = []string{"vault-init", "vault-renew", "vault-revoke"}
	// ProductBuildFlags are the go build flags of the Dockerfile, version
	// variable aside.
	ProductBuildFlags = []string{"-trimpath", "-ldflags", "-s -w -X github.com/podlease/podlease/internal/version.Version="}
)

// ImageFile is one entry of an image's single layer.
type ImageFile struct {
	Path     string // absolute
	Mode     int64  // permission bits
	Dir      bool
	UID, GID int
	Data     []byte
}

// ImageSpec describes a one-layer image.
type ImageSpec struct {
	Ref        string
	Files      []ImageFile
	User       string
	Entrypoint []string
	Env        []string
	Labels     map[string]string
}

// WriteImage writes spec as a docker-archive tarball, which
// `ctr images import` reads.
func WriteImage(file string, spec ImageSpec) error {
	layerTar, err := layerTarball(spec.Files)
	if err != nil {
		return err
	}
	// The fastest gzip level, compressed once: the Vault Agent image of
	// the bench holds a binary of several hundred MB.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.User = spec.User
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Env = spec.Env
	cf.Config.Labels = spec.Labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(spec.Ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(file, ref, img)
}

// layerTarball makes the layer, with every parent directory as an entry.
func layerTarball(files []ImageFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	var dirs func(p string) error
	dirs = func(p string) error {
		if p == "/" || p == "." || seen[p] {
			return nil
		}
		if err := dirs(path.Dir(p)); err != nil {
			return err
		}
		seen[p] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(p, "/") + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
	}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b ImageFile) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range sorted {
		if err := dirs(path.Dir(f.Path)); err != nil {
			return nil, err
		}
		h := &tar.Header{Name: strings.TrimPrefix(f.Path, "/"), Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: time.Unix(0, 0)}
		if f.Dir {
			if seen[f.Path] {
				return nil, fmt.Errorf("image: directory %s listed after a file in it", f.Path)
			}
			seen[f.Path] = true
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// The files of the distroless static:nonroot base the Dockerfile uses that
// podlease relies on: the users, a CA bundle, /tmp.
const (
	distrolessPasswd = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	distrolessGroup  = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
	caBundlePath     = "/etc/ssl/certs/ca-certificates.crt"
)

// baseFiles stands in for the distroless base: /etc/passwd and group with
// nonroot (65532), the host's CA bundle, /tmp and nonroot's home.
func baseFiles() ([]ImageFile, error) {
	ca, err := os.ReadFile(caBundlePath)
	if err != nil {
		return nil, fmt.Errorf("CA bundle for the image: %w (install ca-certificates)", err)
	}
	return []ImageFile{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(distrolessPasswd)},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(distrolessGroup)},
		{Path: caBundlePath, Mode: 0o644, Data: ca},
		{Path: "/home/nonroot", Mode: 0o700, Dir: true, UID: 65532, GID: 65532},
		{Path: "/tmp", Mode: 0o1777, Dir: true},
	}, nil
}

// baseEnv is the distroless base's environment.
var baseEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=" + caBundlePath}

// PodleaseImageSpec is the product image as the Dockerfile describes it,
// with the binaries from binDir (built by BuildProduct).
func PodleaseImageSpec(binDir, version string) (ImageSpec, error) {
	files, err := baseFiles()
	if err != nil {
		return ImageSpec{}, err
	}
	for _, b := range ProductBinaries {
		data, err := os.ReadFile(filepath.Join(binDir, b))
		if err != nil {
			return ImageSpec{}, err
		}
		files = append(files, ImageFile{Path: "/usr/local/bin/" + b, Mode: 0o755, Data: data})
	}
	return ImageSpec{
		Ref:        PodleaseImage,
		Files:      files,
		User:       "65532:65532",
		Entrypoint: []string{"/usr/local/bin/vault-init"},
		Env:        baseEnv,
		Labels: map[string]string{
			"org.opencontainers.image.title":       "podlease",
			"org.opencontainers.image.description": "Per-pod, short-lived Vault credentials: vault-init, vault-renew and vault-revoke",
			"org.opencontainers.image.source":      "https://github.com/podlease/podlease",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.revision":    "unknown",
		},
	}, nil
}

// BuildProduct builds the product binaries into outDir as the Dockerfile
// does (static, trimmed, version stamped).
func BuildProduct(ctx context.Context, outDir, version string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build"}
	args = append(args, ProductBuildFlags...)
	args[len(args)-1] += version
	args = append(args, "-o", outDir+"/")
	for _, b := range ProductBinaries {
		args = append(args, "./cmd/"+b)
	}
	return goBuild(ctx, root, args)
}

// BuildE2ECommand builds a command of the e2e module (./cmd/NAME), static.
func BuildE2ECommand(ctx context.Context, name, out string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	return goBuild(ctx, filepath.Join(root, "e2e"), []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/" + name})
}

func goBuild(ctx context.Context, dir string, args []string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// BuildNodeImages builds the binaries and writes the three images the node
// needs (PauseImage, PodleaseImage, AppImage) into dir, returning the
// tarballs.
func BuildNodeImages(ctx context.Context, dir string) ([]string, error) {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	if err := BuildProduct(ctx, bin, "e2e"); err != nil {
		return nil, err
	}
	for _, c := range []string{"pause", "kubeapp"} {
		if err := BuildE2ECommand(ctx, c, filepath.Join(bin, c)); err != nil {
			return nil, err
		}
	}
	read := func(n string) []byte {
		b, _ := os.ReadFile(filepath.Join(bin, n))
		return b
	}
	podlease, err := PodleaseImageSpec(bin, "e2e")
	if err != nil {
		return nil, err
	}
	base, err := baseFiles()
	if err != nil {
		return nil, err
	}
	specs := []ImageSpec{
		{Ref: PauseImage, Files: []ImageFile{{Path: "/pause", Mode: 0o755, Data: read("pause")}},
			User: "65535:65535", Entrypoint: []string{"/pause"}},
		podlease,
		{Ref: AppImage, Files: append(base, ImageFile{Path: "/usr/local/bin/podlease-app", Mode: 0o755, Data: read("kubeapp")}),
			User: fmt.Sprintf("%d:%d", AppUID, AppUID), Entrypoint: []string{"/usr/local/bin/podlease-app"}, Env: baseEnv},
	}
	var files []string
	for i, s := range specs {
		f := filepath.Join(dir, fmt.Sprintf("image-%d.tar", i))
		if err := WriteImage(f, s); err != nil {
			return nil, fmt.Errorf("image %s: %w", s.Ref, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// VaultImageSpec is an image for Vault Agent packed the way PodleaseImage
// is: the same base, user and environment, with vaultBin as /bin/vault and
// the entrypoint `vault`.
func VaultImageSpec(vaultBin string) (ImageSpec, error) {
	files, err := baseFiles()
	if err != nil {
		return ImageSpec{}, err
	}
	data, err := os.ReadFile(vaultBin)
	if err != nil {
		return ImageSpec{}, err
	}
	files = append(files, ImageFile{Path: "/bin/vault", Mode: 0o755, Data: data})
	return ImageSpec{
		Ref:        VaultImage,
		Files:      files,
		User:       "65532:65532",
		Entrypoint: []string{"/bin/vault"},
		Env:        baseEnv,
	}, nil
}
