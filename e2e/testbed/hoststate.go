package testbed

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// HostState is what the node could change on the shared machine: mounts,
// cgroups, kernel tunables, iptables rules, processes of the node's
// commands and the fixed paths containerd and the kubelet use. Take one
// before StartNode and one after Stop; Diff must be empty.
type HostState struct {
	Mounts     []string
	Cgroups    []string
	Sysctls    map[string]string
	IPTables   string
	Processes  []string
	FixedPaths []string
}

// nodeCommands are the executables of the node; a process running one of
// them after Stop is a leak.
var nodeCommands = []string{"containerd", "containerd-shim", "containerd-shim-runc-v2", "runc", "etcd",
	"kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler", "pause", "podlease-app"}

// fixedPaths exist only if something (another program, a previous run)
// made them; the node must not create any.
var fixedPaths = []string{"/run/containerd", "/var/log/containers", "/var/log/pods", "/var/lib/kubelet",
	"/var/lib/containerd", "/opt/containerd", "/etc/cni/net.d", "/var/run/kubernetes",
	"/usr/libexec/kubernetes", "/var/run/netns", "/etc/kubernetes"}

// TakeHostState records the host's state now.
func TakeHostState() HostState {
	s := HostState{Sysctls: map[string]string{}}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// mount id, parent id, major:minor, root, mount point, options...
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 {
				s.Mounts = append(s.Mounts, fields[4]+" "+fields[3])
			}
		}
		f.Close()
	}
	slices.Sort(s.Mounts)
	for _, h := range cgroupHierarchies() {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if e.IsDir() {
				s.Cgroups = append(s.Cgroups, filepath.Join(h, e.Name()))
			}
		}
	}
	for k := range kernelDefaults {
		b, _ := os.ReadFile("/proc/sys/" + k)
		s.Sysctls[k] = strings.TrimSpace(string(b))
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "kernel/pid_max", "fs/inotify/max_user_instances"} {
		b, _ := os.ReadFile("/proc/sys/" + k)
		s.Sysctls[k] = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("iptables-save").Output(); err == nil {
		s.IPTables = stripIPTablesCounters(string(out))
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		if slices.Contains(nodeCommands, filepath.Base(strings.TrimSuffix(exe, " (deleted)"))) {
			s.Processes = append(s.Processes, e.Name()+" "+exe)
		}
	}
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); err == nil {
			s.FixedPaths = append(s.FixedPaths, p)
		}
	}
	return s
}

// stripIPTablesCounters drops the comment and counter lines that change by
// themselves.
func stripIPTablesCounters(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			if i := strings.Index(l, " ["); i > 0 {
				l = l[:i]
			}
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// Diff lists what is in after and not in s (or differs), one line each.
func (s HostState) Diff(after HostState) []string {
	var d []string
	added := func(what string, before, now []string) {
		for _, x := range now {
			if !slices.Contains(before, x) {
				d = append(d, fmt.Sprintf("%s left behind: %s", what, x))
			}
		}
	}
	added("mount", s.Mounts, after.Mounts)
	added("cgroup", s.Cgroups, after.Cgroups)
	added("process", s.Processes, after.Processes)
	added("path", s.FixedPaths, after.FixedPaths)
	for k, v := range after.Sysctls {
		if s.Sysctls[k] != v {
			d = append(d, fmt.Sprintf("sysctl %s changed: %q -> %q", k, s.Sysctls[k], v))
		}
	}
	if s.IPTables != after.IPTables {
		d = append(d, "iptables rules changed")
	}
	return d
}
