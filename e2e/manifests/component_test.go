package manifests

import (
	"path"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// allKinds builds the component into every kind it supports, beside
// workloads it must leave alone.
const allKinds = "e2e/manifests/testdata/allkinds"

// injectLabel is the label the component selects workloads by.
const injectLabel = "podlease.io/inject"

// effective is c's security context with the pod-level settings it
// inherits filled in, so wiring set per container and wiring set per pod
// compare equal when they mean the same.
func effective(c *corev1.Container, pod *corev1.PodSecurityContext) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{}
	if c.SecurityContext != nil {
		sc = c.SecurityContext.DeepCopy()
	}
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	sc.RunAsNonRoot = pick(sc.RunAsNonRoot, pod.RunAsNonRoot)
	sc.RunAsUser = pick(sc.RunAsUser, pod.RunAsUser)
	sc.RunAsGroup = pick(sc.RunAsGroup, pod.RunAsGroup)
	sc.SeccompProfile = pick(sc.SeccompProfile, pod.SeccompProfile)
	return sc
}

// comparable returns a copy of a podlease container as the two wirings
// should agree on it: effective security, and neither the environment
// (flags and VAULT_ADDR by hand, the podlease ConfigMap injected) nor the
// arguments (flags by hand, --annotations injected).
func comparable(c *corev1.Container, w workload) *corev1.Container {
	c = c.DeepCopy()
	c.SecurityContext = effective(c, w.spec.SecurityContext)
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "VAULT_ADDR" })
	c.EnvFrom = nil
	c.Args = nil
	c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "podlease-annotations" })
	return c
}

// TestComponentWiringEqualsBase: every workload the component injects
// into gets what manifests/base wires by hand (containers, volumes, the
// app's mount, fsGroup), plus the annotations file, and the settings set
// once in the podlease ConfigMap match base's.
func TestComponentWiringEqualsBase(t *testing.T) {
	t.Parallel()
	ref := workloads(t, base)[0]
	refInit, _ := ref.container(t, "vault-init")
	refApp, _ := ref.container(t, "app")
	for _, dir := range []string{annotationsExample, agentExample, allKinds} {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			objs := kustomize(t, dir)
			injected := 0
			for _, o := range objs {
				if cm, ok := o.obj.(*corev1.ConfigMap); ok && cm.Name == "podlease" {
					if got, want := cm.Data["VAULT_ADDR"], envValue(refInit.Env, "VAULT_ADDR"); got != want {
						t.Errorf("ConfigMap podlease VAULT_ADDR %q, base's %q", got, want)
					}
				}
				w, ok := podTemplate(o)
				if !ok {
					continue
				}
				if w.labels[injectLabel] != "true" {
					for _, c := range w.all() {
						if isPodlease(c) || c.Name == "vault-init" {
							t.Errorf("%s is not labelled %s: \"true\" but got %s", w.name, injectLabel, c.Name)
						}
					}
					if len(w.spec.Volumes) != 0 || w.spec.SecurityContext != nil {
						t.Errorf("%s is not labelled but got volumes %v / %+v", w.name, w.spec.Volumes, w.spec.SecurityContext)
					}
					continue
				}
				injected++
				t.Run(w.name, func(t *testing.T) { checkWiring(t, ref, refApp, w) })
			}
			if injected == 0 {
				t.Fatal("no labelled workload")
			}
		})
	}
}

func checkWiring(t *testing.T, ref workload, refApp *corev1.Container, w workload) {
	for _, name := range []string{"vault-init", "vault-renew"} {
		want, _ := ref.container(t, name)
		got, _ := w.container(t, name)
		// Semantic: an empty list equals a missing one.
		if a, b := comparable(want, ref), comparable(got, w); !equality.Semantic.DeepEqual(a, b) {
			t.Errorf("%s differs from manifests/base's:\n got %+v\nwant %+v", name, b, a)
		}
		if len(got.EnvFrom) != 1 || got.EnvFrom[0].ConfigMapRef == nil || got.EnvFrom[0].ConfigMapRef.Name != "podlease" {
			t.Errorf("%s envFrom %+v, want the ConfigMap podlease", name, got.EnvFrom)
		}
	}
	for _, name := range []string{"vault-secrets", "vault-state", "vault-token"} {
		if want, got := ref.volume(name), w.volume(name); !reflect.DeepEqual(want, got) {
			t.Errorf("volume %s: got %+v, want base's %+v", name, got, want)
		}
	}
	if want, got := ref.spec.SecurityContext.FSGroup, w.spec.SecurityContext; got == nil || !reflect.DeepEqual(want, got.FSGroup) {
		t.Errorf("pod securityContext %+v, want fsGroup %d", got, *want)
	}
	if want, got := mountOf(refApp, "vault-secrets"), mountOf(&w.spec.Containers[0], "vault-secrets"); got == nil || *got != *want {
		t.Errorf("first container %s mounts the secrets %+v, want base's %+v", w.spec.Containers[0].Name, got, want)
	}

	// vault-init reads the pod's annotations from the downward API.
	init, _ := w.container(t, "vault-init")
	file := cflag(init, "annotations", "")
	m := mountAt(init, path.Dir(file))
	if file == "" || m == nil || !m.ReadOnly {
		t.Fatalf("vault-init --annotations %q: no read-only mount at its directory", file)
	}
	v := w.volume(m.Name)
	if v == nil || v.DownwardAPI == nil || len(v.DownwardAPI.Items) != 1 ||
		v.DownwardAPI.Items[0].Path != path.Base(file) || v.DownwardAPI.Items[0].FieldRef == nil ||
		v.DownwardAPI.Items[0].FieldRef.FieldPath != "metadata.annotations" {
		t.Errorf("volume %s is not the downward API file %s of metadata.annotations: %+v", m.Name, path.Base(file), v)
	}
	for _, c := range w.all() {
		if !isPodlease(c) && mountOf(c, m.Name) != nil {
			t.Errorf("%s mounts the annotations: only vault-init needs them", c.Name)
		}
	}
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestComponentKeepsTheWorkloads: the component adds to a workload's own
// init containers, volumes, mounts and security context and changes none
// of them; podlease's init containers come after the workload's, as the
// injector's agent does by default.
func TestComponentKeepsTheWorkloads(t *testing.T) {
	t.Parallel()
	var cron *workload
	for _, w := range workloads(t, allKinds) {
		if w.name == "CronJob/cron" {
			cron = &w
		}
	}
	if cron == nil {
		t.Fatal("no CronJob/cron")
	}
	var inits []string
	for _, c := range cron.spec.InitContainers {
		inits = append(inits, c.Name)
	}
	if want := []string{"migrate", "vault-init", "vault-renew"}; !slices.Equal(inits, want) {
		t.Errorf("init containers %q, want %q", inits, want)
	}
	if cron.volume("cache") == nil {
		t.Error("the workload's volume cache is gone")
	}
	app, second := &cron.spec.Containers[0], &cron.spec.Containers[1]
	if mountOf(app, "cache") == nil || mountOf(app, "vault-secrets") == nil {
		t.Errorf("first container mounts %+v, want its own cache and the secrets", app.VolumeMounts)
	}
	// The limit of a component, documented: only the first container gets
	// the secrets.
	if len(second.VolumeMounts) != 0 {
		t.Errorf("second container mounts %+v: the component only touches the first", second.VolumeMounts)
	}
	if sc := cron.spec.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.FSGroup == nil {
		t.Errorf("pod securityContext %+v, want the workload's runAsNonRoot and the component's fsGroup", sc)
	}
}
