// Command bench measures podlease against Vault Agent and against the floor
// (a minimal login-and-read program) on the test bed's real Vault and
// PostgreSQL: pod-start latency, peak and steady-state memory, sidecar CPU,
// Vault requests per pod and binary sizes. It prints a Markdown report and
// writes it to bench/results.md.
//
// With --only=resident it instead attributes the resident memory of
// vault-renew, the floors and any --variant to Go packages and runtime
// regions (see resident.go); --pid, --addrs and --fault-around are its
// pieces, usable alone.
//
// The machine is shared and small, so contenders run interleaved (A, B, C,
// A, B, C, ... with the order rotated each round) and every ratio is
// computed pair by pair within a round before taking the median.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/podlease/podlease/e2e/testbed"
)

// config is the command line.
type config struct {
	runs       int           // pod starts per contender
	window     time.Duration // sidecar measurement window
	ttl        time.Duration // lease and token TTL of the renewing sidecars
	scaleTTL   time.Duration // TTL the per-hour request figures are scaled to
	ratePods   int           // renewing pods per sidecar kind whose renewals give the rate
	out        string        // results file
	verifyPG   bool          // log in to PostgreSQL with every credential written
	skipStrip  bool          // do not strip a copy of the vault binary
	keepPodDir bool          // keep the pod directories (never holds more than test-bed credentials)
	only       string        // "", "local" or "kube": which parts to run
	kubeRuns   int           // rounds of the Kubernetes pod-start comparison
	kubeStrip  bool          // strip the vault binary packed into the Agent's image
	variants   []variant     // --only=resident: more programs to attribute
	pid        int           // attribute this running process and exit
	symbols    string        // the unstripped twin of --pid's binary
}

func main() {
	var c config
	flag.IntVar(&c.runs, "runs", 30, "pod starts per contender (interleaved)")
	flag.DurationVar(&c.window, "window", 10*time.Minute, "how long to watch the sidecars (renewing and idle); memory is reported at its end")
	flag.DurationVar(&c.ttl, "ttl", 20*time.Second, "lease and token TTL for the renewing sidecars")
	flag.DurationVar(&c.scaleTTL, "scale-ttl", time.Hour, "TTL to scale the per-hour renewal request figures to")
	flag.IntVar(&c.ratePods, "rate-pods", 10, "renewing pods per sidecar kind (vault-renew, Vault Agent) whose renewals give the renewal rate and margins: the Agent draws its renewal point once per credential, so one pod is one draw")
	flag.StringVar(&c.out, "out", "", "results file (default: bench/results.md at the repository root)")
	flag.BoolVar(&c.verifyPG, "verify-pg", true, "log in to PostgreSQL with every credential file written")
	flag.BoolVar(&c.skipStrip, "skip-strip", false, "do not strip a copy of the vault binary to report its stripped size")
	flag.BoolVar(&c.keepPodDir, "keep", false, "keep the pod directories (in /dev/shm) for inspection")
	flag.StringVar(&c.only, "only", "", "run only one part: local (the processes on the test bed) or kube (pod start on a real Kubernetes node, needs root); the other part of the results file is kept. resident: attribute the resident memory of vault-renew renewing, the floors and each --variant after --window, and write it to bench/resident.md (results.md is left as it is)")
	flag.IntVar(&c.kubeRuns, "kube-runs", 10, "rounds of the Kubernetes pod-start comparison (three pods each)")
	flag.BoolVar(&c.kubeStrip, "kube-strip", true, "pack a stripped copy of the vault binary into the Vault Agent image (objcopy --strip-all)")
	flag.Func("variant", "with --only=resident, one more program to run and attribute: LABEL=renew:PATH[:ENV=VALUE...] (run as vault-renew) or LABEL=floor:PATH (run as the floor); repeatable", func(s string) error {
		v, err := parseVariant(s)
		c.variants = append(c.variants, v)
		return err
	})
	flag.IntVar(&c.pid, "pid", 0, "only attribute the resident memory of this running Go process and exit (no test bed)")
	flag.StringVar(&c.symbols, "symbols", "", "with --pid: the binary's twin built without -s, if it runs stripped")
	addrs := flag.String("addrs", "", "only count the addresses in this file (hexadecimal, one a line) by package of the --symbols binary, and exit (no test bed)")
	fault := flag.String("fault-around", "", "only measure how many pages of this file (at least 8 MiB) the kernel maps per page touched, with each madvise advice, and exit")
	flag.Parse()
	if *fault != "" {
		out, err := faultAround(*fault)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Print(out)
		return
	}
	if *addrs != "" {
		f, err := os.Open(*addrs)
		if err == nil {
			var out string
			out, err = symbolizeAddrs(f, c.symbols)
			f.Close()
			fmt.Print(out)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if c.pid != 0 {
		out, err := attributePID(c.pid, c.symbols)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Print(out)
		return
	}
	if c.runs < 1 || c.window < 10*time.Second || c.ttl < 5*time.Second || c.kubeRuns < 1 || c.ratePods < 1 {
		fmt.Fprintln(os.Stderr, "bench: want --runs >= 1, --window >= 10s, --ttl >= 5s, --kube-runs >= 1, --rate-pods >= 1")
		os.Exit(2)
	}
	if c.only != "" && c.only != "local" && c.only != "kube" && c.only != "resident" {
		fmt.Fprintf(os.Stderr, "bench: --only=%q: want local, kube or resident (or nothing for local and kube)\n", c.only)
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()

	root, err := testbed.RepoRoot()
	if err != nil {
		return err
	}
	if c.out == "" {
		c.out = filepath.Join(root, "bench", "results.md")
	}
	vaultBin, err := testbed.VaultBinary()
	if err != nil {
		return err
	}
	// The pods' volumes are emptyDir with medium: Memory, i.e. tmpfs.
	work, err := os.MkdirTemp(shmDir(), "podlease-bench-")
	if err != nil {
		return err
	}
	if !c.keepPodDir {
		defer os.RemoveAll(work)
	}

	doLocal, doKube := c.only == "" || c.only == "local", c.only == "" || c.only == "kube"
	var bins binaries
	if c.only == "resident" {
		logf("building the podlease binaries and the floors with their symbol tables")
		if bins, err = buildWith(ctx, root, filepath.Join(work, "bin"), ""); err != nil {
			return err
		}
	}
	if doLocal {
		logf("building the podlease binaries as `make build` does, and the floor")
		if bins, err = build(ctx, root, filepath.Join(work, "bin")); err != nil {
			return err
		}
	}
	bins.vault = vaultBin
	mach := describeMachine(ctx, root, vaultBin)

	logf("starting the test bed")
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	bed, err := testbed.Start(startCtx, func(f string, a ...any) { logf(f, a...) })
	cancel()
	if err != nil {
		return err
	}
	defer bed.Close()
	mach.loadBefore = loadAvg()
	if mach.gnuTime, err = exec.LookPath("/usr/bin/time"); err != nil {
		mach.gnuTime = ""
		logf("no GNU time (/usr/bin/time, Debian package time): peak memory falls back to the rusage of the bench's own children, an upper bound")
	}

	audit, err := enableAudit(ctx, bed)
	if err != nil {
		return err
	}

	b := &bench{cfg: c, bed: bed, bins: bins, work: work, audit: audit, gnuTime: mach.gnuTime}
	rep := &report{cfg: c, mach: mach}

	if c.only == "resident" {
		out, err := b.residentRun(ctx)
		if err != nil {
			return err
		}
		file := filepath.Join(root, "bench", "resident.md")
		text := fmt.Sprintf("# Where vault-renew's resident memory goes\n\nGenerated by `cd e2e && PODLEASE_VAULT_BIN=$PWD/../bin/vault go run ./cmd/bench %s` on %s UTC.\n\n%s",
			strings.Join(os.Args[1:], " "), began.UTC().Format("2006-01-02 15:04"), out)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			return err
		}
		fmt.Print(out)
		logf("wrote %s", file)
		return nil
	}
	var local, kube string
	if doLocal {
		if local, err = b.local(ctx, rep, began); err != nil {
			return err
		}
	}
	// Last: setup.sh rewrites the bed's policy app and database connection
	// pg for the node.
	if doKube {
		res, err := b.kubeStarts(ctx)
		if err != nil {
			return err
		}
		kube = res.markdown(c)
	}

	old, err := os.ReadFile(c.out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	text := splice(string(old), local, kube)
	fmt.Print(local + kube)
	if err := os.MkdirAll(filepath.Dir(c.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.out, []byte(text), 0o644); err != nil {
		return err
	}
	logf("wrote %s (%s in all)", c.out, time.Since(began).Round(time.Second))
	return nil
}

// local measures the contenders as processes on the test bed: pod start,
// sidecars, sizes. It returns their sections of the results.
func (b *bench) local(ctx context.Context, rep *report, began time.Time) (string, error) {
	c := b.cfg
	var err error
	logf("pod start: %d runs per contender, interleaved", c.runs)
	if rep.starts, err = b.podStarts(ctx); err != nil {
		return "", err
	}
	logf("sidecars: %s window, renewing pair at TTL %s, idle pair at TTL 1h", c.window, c.ttl)
	rep.sidecars, err = b.sidecars(ctx)
	if err != nil {
		if !errors.Is(err, errRenewUnavailable) {
			return "", err
		}
		rep.sidecarNote = err.Error()
		logf("%v", err)
	}
	logf("binary sizes")
	if rep.sizes, err = sizes(b.bins, b.work, c.skipStrip); err != nil {
		return "", err
	}
	rep.mach.loadAfter = loadAvg()
	rep.elapsed = time.Since(began)
	return rep.markdown(), nil
}

// bench holds what every phase needs.
type bench struct {
	cfg   config
	bed   *testbed.Bed
	bins  binaries
	work  string
	audit *auditLog
	// gnuTime is /usr/bin/time, which measures a child's peak RSS
	// cleanly (see memOnce); empty if missing.
	gnuTime string
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// shmDir is a tmpfs directory if there is one, like an emptyDir with
// medium: Memory.
func shmDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}
