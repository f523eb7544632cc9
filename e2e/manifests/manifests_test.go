package manifests

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/podlease/podlease/e2e/testbed"
)

// The kustomizations users apply; each must build.
const (
	topLevel   = "manifests"
	base       = "manifests/base"
	jobExample = "manifests/examples/job"
	vaultSide  = "manifests/vault"
	// Built with the podlease component.
	annotationsExample = "manifests/examples/annotations"
	agentExample       = "manifests/examples/from-agent-injector"
)

// workloadBuilds are the kustomizations that run pods with podlease.
var workloadBuilds = []string{topLevel, base, jobExample, annotationsExample, agentExample}

// podleaseImage is the image repository of the podlease containers.
const podleaseImage = "ghcr.io/podlease/podlease"

// decoders maps apiVersion/kind to a new object of its Go type. Every kind
// the manifests use must be here: an unknown kind fails the build test.
var decoders = map[string]func() metav1.Object{
	"v1/Namespace":      func() metav1.Object { return new(corev1.Namespace) },
	"v1/ServiceAccount": func() metav1.Object { return new(corev1.ServiceAccount) },
	"v1/Secret":         func() metav1.Object { return new(corev1.Secret) },
	"v1/ConfigMap":      func() metav1.Object { return new(corev1.ConfigMap) },
	"apps/v1/Deployment": func() metav1.Object {
		return new(appsv1.Deployment)
	},
	"apps/v1/StatefulSet": func() metav1.Object { return new(appsv1.StatefulSet) },
	"apps/v1/DaemonSet":   func() metav1.Object { return new(appsv1.DaemonSet) },
	"batch/v1/Job":        func() metav1.Object { return new(batchv1.Job) },
	"batch/v1/CronJob":    func() metav1.Object { return new(batchv1.CronJob) },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() metav1.Object {
		return new(rbacv1.ClusterRoleBinding)
	},
}

// object is one object of a kustomize build, decoded into its API type.
type object struct {
	kind string
	obj  metav1.Object
}

func (o object) String() string {
	if ns := o.obj.GetNamespace(); ns != "" {
		return o.kind + " " + ns + "/" + o.obj.GetName()
	}
	return o.kind + " " + o.obj.GetName()
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// kustomize runs `kubectl kustomize dir` (dir relative to the repository
// root) and decodes every object it prints strictly.
func kustomize(t *testing.T, dir string) []object {
	t.Helper()
	kubectl, err := testbed.KubectlBinary()
	if err != nil {
		t.Fatalf("the manifests are built with `kubectl kustomize`: %v", err)
	}
	cmd := exec.Command(kubectl, "kustomize", dir)
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.Bytes())
	}
	var objs []object
	for i, doc := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		o, err := decode([]byte(doc))
		if err != nil {
			t.Errorf("kubectl kustomize %s: document %d: %v\n%s", dir, i+1, err, doc)
			continue
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		t.Fatalf("kubectl kustomize %s: no objects", dir)
	}
	return objs
}

// decode decodes one YAML document into its API type as strictly as the API
// server's strict field validation: duplicate keys, unknown fields and
// fields in the wrong case are errors.
func decode(doc []byte) (object, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return object{}, err
	}
	newObj, ok := decoders[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return object{}, fmt.Errorf("apiVersion %q kind %q: not a kind these tests know; add it to decoders", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err == nil {
		err = errors.Join(strict...)
	}
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return object{kind: tm.Kind, obj: obj}, nil
}

// TestDecodeIsStrict shows that the decoder refuses what the API server's
// strict validation refuses, so a typo in the manifests cannot pass.
func TestDecodeIsStrict(t *testing.T) {
	const sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n"
	tests := []struct {
		name    string
		doc     string
		wantErr string
	}{
		{"valid", sa + "automountServiceAccountToken: false\n", ""},
		{"unknown field", sa + "automountToken: false\n", `unknown field "automountToken"`},
		{"field in the wrong case", sa + "AutomountServiceAccountToken: false\n", `unknown field "AutomountServiceAccountToken"`},
		{"duplicate key", sa + "automountServiceAccountToken: false\nautomountServiceAccountToken: true\n", "already set"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n", "add it to decoders"},
		{"nested unknown field", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\nspec:\n  template:\n    spec:\n      initContainers:\n        - name: c\n          restartpolicy: Always\n", `unknown field "spec.template.spec.initContainers[0].restartpolicy"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode([]byte(tt.doc))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("decode: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("decode: error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestKustomizeBuilds builds every kustomization and decodes its objects
// strictly (kustomize fails the test on the first problem it reports).
func TestKustomizeBuilds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dir   string
		kinds []string // the kinds the build may hold; anything else is a surprise
	}{
		{topLevel, []string{"ServiceAccount", "Deployment"}},
		{base, []string{"ServiceAccount", "Deployment"}},
		{jobExample, []string{"ServiceAccount", "Job"}},
		{annotationsExample, []string{"ServiceAccount", "ConfigMap", "Deployment"}},
		{agentExample, []string{"ServiceAccount", "ConfigMap", "Deployment"}},
		{vaultSide, []string{"Namespace", "ServiceAccount", "ClusterRoleBinding", "Secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			t.Parallel()
			seen := map[string]bool{}
			for _, o := range kustomize(t, tt.dir) {
				if !slices.Contains(tt.kinds, o.kind) {
					t.Errorf("%s: unexpected kind (want only %q): the workload needs no other objects, least of all RBAC", o, tt.kinds)
				}
				if seen[o.String()] {
					t.Errorf("%s: twice", o)
				}
				seen[o.String()] = true
			}
		})
	}
}

// workload is the pod template of a Deployment, StatefulSet, DaemonSet,
// Job or CronJob.
type workload struct {
	name        string // Deployment/app
	labels      map[string]string
	annotations map[string]string // the pod template's
	spec        *corev1.PodSpec
}

// podTemplate returns the workload of o, if o has a pod template.
func podTemplate(o object) (workload, bool) {
	var tmpl *corev1.PodTemplateSpec
	switch obj := o.obj.(type) {
	case *appsv1.Deployment:
		tmpl = &obj.Spec.Template
	case *appsv1.StatefulSet:
		tmpl = &obj.Spec.Template
	case *appsv1.DaemonSet:
		tmpl = &obj.Spec.Template
	case *batchv1.Job:
		tmpl = &obj.Spec.Template
	case *batchv1.CronJob:
		tmpl = &obj.Spec.JobTemplate.Spec.Template
	default:
		return workload{}, false
	}
	return workload{o.kind + "/" + o.obj.GetName(), o.obj.GetLabels(), tmpl.Annotations, &tmpl.Spec}, true
}

func workloads(t *testing.T, dir string) []workload {
	t.Helper()
	var ws []workload
	for _, o := range kustomize(t, dir) {
		if w, ok := podTemplate(o); ok {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		t.Fatalf("%s: no workload", dir)
	}
	return ws
}

// container returns the init or regular container name, and its index in
// its list, or fails the test.
func (w workload) container(t *testing.T, name string) (*corev1.Container, int) {
	t.Helper()
	for _, list := range [][]corev1.Container{w.spec.InitContainers, w.spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i], i
			}
		}
	}
	t.Fatalf("%s: no container %s", w.name, name)
	return nil, -1
}

func (w workload) volume(name string) *corev1.Volume {
	for i := range w.spec.Volumes {
		if w.spec.Volumes[i].Name == name {
			return &w.spec.Volumes[i]
		}
	}
	return nil
}

// all returns every container of the pod: init, sidecar and regular.
func (w workload) all() []*corev1.Container {
	var cs []*corev1.Container
	for i := range w.spec.InitContainers {
		cs = append(cs, &w.spec.InitContainers[i])
	}
	for i := range w.spec.Containers {
		cs = append(cs, &w.spec.Containers[i])
	}
	return cs
}

func isPodlease(c *corev1.Container) bool {
	repo := c.Image
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo == podleaseImage
}

// flagValue returns the value of flag --name on command line args (as
// --name=v or --name v), else of env PODLEASE_NAME in env, else def: the
// precedence the binaries use.
func flagValue(args []string, env []corev1.EnvVar, name, def string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
	}
	key := "PODLEASE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	for _, e := range env {
		if e.Name == key {
			return e.Value
		}
	}
	return def
}

// cflag is flagValue for a container's command line and environment.
func cflag(c *corev1.Container, name, def string) string {
	return flagValue(append(slices.Clone(c.Command[1:]), c.Args...), c.Env, name, def)
}

// mountAt returns c's volume mount at path p, or nil.
func mountAt(c *corev1.Container, p string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if path.Clean(c.VolumeMounts[i].MountPath) == path.Clean(p) {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// mountOf returns c's mount of volume name, or nil.
func mountOf(c *corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// probePort resolves a probe's port, by number or by the name of one of c's
// ports.
func probePort(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

// Defaults of the binaries' flags that the manifests rely on.
const (
	defaultSecretsDir    = "/vault/secrets"
	defaultStateDir      = "/vault/state"
	defaultJWTFile       = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	defaultListen        = ":8099"
	defaultRevokeTimeout = "10s" // vault-renew --revoke-timeout
	// graceMargin is what the kubelet and the API need on top of
	// vault-renew's revocation within the termination grace period.
	graceMargin = 5 * time.Second
)

// TestWorkloads checks the wiring and hardening of every pod that runs
// podlease, in every kustomization that has one.
func TestWorkloads(t *testing.T) {
	t.Parallel()
	bins := imageBinaries(t)
	bin := func(name string) string {
		for _, b := range bins {
			if path.Base(b) == name {
				return b
			}
		}
		t.Fatalf("the image has no %s (it has %q)", name, bins)
		return ""
	}
	rules := []struct {
		name  string
		check func(t *testing.T, w workload)
	}{
		{"vault-init runs first, to completion", func(t *testing.T, w workload) {
			if len(w.spec.InitContainers) == 0 || w.spec.InitContainers[0].Name != "vault-init" {
				t.Fatal("the first init container is not vault-init")
			}
			c := &w.spec.InitContainers[0]
			if c.RestartPolicy != nil {
				t.Errorf("vault-init has restartPolicy %s: it must finish before anything else starts", *c.RestartPolicy)
			}
			if want := []string{bin("vault-init")}; !slices.Equal(c.Command, want) {
				t.Errorf("vault-init command %q, want %q", c.Command, want)
			}
		}},
		{"vault-renew is a native sidecar after vault-init", func(t *testing.T, w workload) {
			c, i := w.container(t, "vault-renew")
			if !slices.ContainsFunc(w.spec.InitContainers, func(x corev1.Container) bool { return x.Name == "vault-renew" }) || i < 1 {
				t.Fatal("vault-renew must be an init container after vault-init")
			}
			if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Error("vault-renew needs restartPolicy: Always (a native sidecar)")
			}
			if want := []string{bin("vault-renew")}; !slices.Equal(c.Command, want) {
				t.Errorf("vault-renew command %q, want %q", c.Command, want)
			}
		}},
		{"vault-renew revokes on SIGTERM, not in a preStop hook", func(t *testing.T, w workload) {
			c, _ := w.container(t, "vault-renew")
			// The kubelet sends a native sidecar SIGTERM only after the app
			// containers have exited, but runs its preStop hook at once, in
			// parallel with the app's SIGTERM: revoking there would pull
			// the credential from under an app that is still draining.
			if v := cflag(c, "revoke-on-exit", "false"); v != "true" {
				t.Errorf("vault-renew --revoke-on-exit is %q, want true: the pod's credentials would outlive it", v)
			}
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
				t.Errorf("vault-renew has a preStop hook %+v: it runs while the app still drains", c.Lifecycle.PreStop)
			}
		}},
		{"vault-renew is probed for readiness on /readyz only", func(t *testing.T, w workload) {
			c, _ := w.container(t, "vault-renew")
			_, port, _ := strings.Cut(cflag(c, "listen", defaultListen), ":")
			p := c.ReadinessProbe
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || fmt.Sprint(probePort(c, p.HTTPGet.Port)) != port {
				t.Errorf("vault-renew readiness probe %+v, want GET /readyz on port %s", p, port)
			}
			// A failing liveness or startup probe restarts the container
			// with SIGTERM: --revoke-on-exit would revoke the credentials
			// of a pod that goes on running.
			if c.LivenessProbe != nil || c.StartupProbe != nil {
				t.Error("vault-renew has a liveness or startup probe: its failure would revoke the credentials of a live pod")
			}
		}},
		{"secrets and state are in-memory emptyDirs", func(t *testing.T, w workload) {
			c, _ := w.container(t, "vault-init")
			for _, dir := range []string{cflag(c, "secrets-dir", defaultSecretsDir), cflag(c, "state-dir", defaultStateDir)} {
				m := mountAt(c, dir)
				if m == nil {
					t.Errorf("vault-init mounts nothing at %s", dir)
					continue
				}
				v := w.volume(m.Name)
				if v == nil || v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
					t.Errorf("volume %s (%s) is not an emptyDir with medium Memory: credentials would reach the node's disk", m.Name, dir)
				}
				if m.ReadOnly {
					t.Errorf("vault-init mounts %s read-only", dir)
				}
			}
		}},
		{"vault-renew sees vault-init's files where it wrote them", func(t *testing.T, w workload) {
			init, _ := w.container(t, "vault-init")
			renew, _ := w.container(t, "vault-renew")
			state := cflag(init, "state-dir", defaultStateDir)
			if got := cflag(renew, "state-dir", defaultStateDir); got != state {
				t.Errorf("vault-renew --state-dir %s, vault-init's is %s", got, state)
			}
			// vault-renew writes only NAME in its own --secrets-dir and
			// refuses a state.json that names another.
			if got, want := cflag(renew, "secrets-dir", defaultSecretsDir), cflag(init, "secrets-dir", defaultSecretsDir); got != want {
				t.Errorf("vault-renew --secrets-dir %s, vault-init's is %s", got, want)
			}
			// state.json records the secret files' paths: the same volumes
			// must be at the same paths, writable (rotation, removal).
			for _, dir := range []string{cflag(init, "secrets-dir", defaultSecretsDir), state} {
				im, rm := mountAt(init, dir), mountAt(renew, dir)
				if im == nil || rm == nil || im.Name != rm.Name || rm.ReadOnly {
					t.Errorf("%s: vault-init mounts %+v, vault-renew %+v; want the same volume, writable", dir, im, rm)
				}
			}
		}},
		{"the app reads the secrets read-only and never sees the state", func(t *testing.T, w workload) {
			init, _ := w.container(t, "vault-init")
			secrets := mountAt(init, cflag(init, "secrets-dir", defaultSecretsDir))
			state := mountAt(init, cflag(init, "state-dir", defaultStateDir))
			if secrets == nil || state == nil {
				t.Fatal("vault-init lacks its secrets or state mount")
			}
			readers := 0
			for _, c := range w.all() {
				if isPodlease(c) {
					continue
				}
				if m := mountOf(c, state.Name); m != nil {
					t.Errorf("container %s mounts the state volume %s: it holds the pod's Vault token", c.Name, state.Name)
				}
				if m := mountOf(c, secrets.Name); m != nil {
					readers++
					if !m.ReadOnly {
						t.Errorf("container %s mounts the secrets volume %s writable", c.Name, secrets.Name)
					}
				}
			}
			if readers == 0 {
				t.Error("no app container mounts the secrets")
			}
		}},
		{"Vault login uses a short-lived token for audience vault", func(t *testing.T, w workload) {
			if w.spec.AutomountServiceAccountToken == nil || *w.spec.AutomountServiceAccountToken {
				t.Error("automountServiceAccountToken is not false: every container would get an API token")
			}
			init, _ := w.container(t, "vault-init")
			renew, _ := w.container(t, "vault-renew")
			jwt := cflag(init, "jwt-file", defaultJWTFile)
			m := mountAt(init, path.Dir(jwt))
			if m == nil {
				t.Fatalf("vault-init --jwt-file %s: nothing mounted at %s", jwt, path.Dir(jwt))
			}
			var tok *corev1.ServiceAccountTokenProjection
			if v := w.volume(m.Name); v != nil && v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.ServiceAccountToken != nil && s.ServiceAccountToken.Path == path.Base(jwt) {
						tok = s.ServiceAccountToken
					}
				}
			}
			switch {
			case tok == nil:
				t.Errorf("volume %s has no serviceAccountToken at %s", m.Name, path.Base(jwt))
			case tok.Audience != "vault":
				t.Errorf("token audience %q, want vault (the kubernetes auth role's)", tok.Audience)
			case tok.ExpirationSeconds == nil || *tok.ExpirationSeconds > 3600:
				t.Errorf("token expirationSeconds %v, want an hour at most", tok.ExpirationSeconds)
			}
			// vault-renew logs in again with the same file, read afresh.
			if rm := mountAt(renew, path.Dir(jwt)); rm == nil || rm.Name != m.Name {
				t.Errorf("vault-renew does not mount %s at %s: it could not log in again", m.Name, path.Dir(jwt))
			}
		}},
		{"runs as ServiceAccount app with Vault role app", func(t *testing.T, w workload) {
			if w.spec.ServiceAccountName != "app" {
				t.Errorf("serviceAccountName %q, want app (manifests/vault/setup.sh binds role app to it)", w.spec.ServiceAccountName)
			}
			init, _ := w.container(t, "vault-init")
			r := cflag(init, "role", "")
			if r == "" && cflag(init, "annotations", "") != "" {
				r = cmp.Or(w.annotations["podlease.io/role"], w.annotations["vault.hashicorp.com/role"])
			}
			if r != "app" {
				t.Errorf("vault-init role %q (flag or annotation), want app", r)
			}
		}},
		{"every container is hardened (restricted Pod Security)", func(t *testing.T, w workload) {
			pod := w.spec.SecurityContext
			if pod == nil {
				pod = &corev1.PodSecurityContext{}
			}
			for _, c := range w.all() {
				sc := c.SecurityContext
				if sc == nil {
					sc = &corev1.SecurityContext{}
				}
				nonRoot := pick(sc.RunAsNonRoot, pod.RunAsNonRoot)
				user := pick(sc.RunAsUser, pod.RunAsUser)
				seccomp := pick(sc.SeccompProfile, pod.SeccompProfile)
				switch {
				case nonRoot == nil || !*nonRoot:
					t.Errorf("%s: runAsNonRoot is not true", c.Name)
				case user != nil && *user == 0:
					t.Errorf("%s: runAsUser 0", c.Name)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s: readOnlyRootFilesystem is not true", c.Name)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s: allowPrivilegeEscalation is not false", c.Name)
				}
				if sc.Privileged != nil && *sc.Privileged {
					t.Errorf("%s: privileged", c.Name)
				}
				if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
					t.Errorf("%s: capabilities %+v, want drop [ALL] and add nothing", c.Name, sc.Capabilities)
				}
				if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", c.Name, seccomp)
				}
			}
			// The secret files are 0440, owned by the podlease user: the
			// group lets an app running as another user read them.
			if pod.FSGroup == nil {
				t.Error("no fsGroup: an app running as another user could not read the secret files")
			}
		}},
		{"every container has requests and a memory limit; podlease's are small", func(t *testing.T, w workload) {
			small := resource.MustParse("64Mi")
			for _, c := range w.all() {
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if _, ok := c.Resources.Requests[r]; !ok {
						t.Errorf("%s: no %s request", c.Name, r)
					}
				}
				limit, ok := c.Resources.Limits[corev1.ResourceMemory]
				if !ok {
					t.Errorf("%s: no memory limit", c.Name)
				} else if isPodlease(c) && limit.Cmp(small) > 0 {
					t.Errorf("%s: memory limit %s, want at most %s", c.Name, limit.String(), small.String())
				}
			}
		}},
		{"the grace period outlasts vault-renew's revocation", func(t *testing.T, w workload) {
			renew, _ := w.container(t, "vault-renew")
			s := cflag(renew, "revoke-timeout", defaultRevokeTimeout)
			timeout, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("vault-renew --revoke-timeout %q: %v", s, err)
			}
			grace := 30 * time.Second // the API's default
			if g := w.spec.TerminationGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			if grace < timeout+graceMargin {
				t.Errorf("terminationGracePeriodSeconds %s < vault-renew --revoke-timeout %s + %s: the kubelet would kill it mid-revocation", grace, timeout, graceMargin)
			}
		}},
		{"one podlease image for all podlease containers", func(t *testing.T, w workload) {
			init, _ := w.container(t, "vault-init")
			for _, c := range w.all() {
				if strings.HasPrefix(c.Name, "vault-") && c.Image != init.Image {
					t.Errorf("%s: image %s, vault-init's is %s", c.Name, c.Image, init.Image)
				}
			}
			if !isPodlease(init) {
				t.Errorf("vault-init image %s is not %s", init.Image, podleaseImage)
			}
		}},
	}
	for _, dir := range workloadBuilds {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			for _, w := range workloads(t, dir) {
				t.Run(w.name, func(t *testing.T) {
					for _, r := range rules {
						t.Run(r.name, func(t *testing.T) { r.check(t, w) })
					}
				})
			}
		})
	}
}

// pick returns the container-level setting if set, else the pod-level one.
func pick[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

// TestServiceAccount checks the identity the pods run as: no API token by
// default, and the same object in every kustomization that ships it.
func TestServiceAccount(t *testing.T) {
	t.Parallel()
	var first *corev1.ServiceAccount
	for _, dir := range workloadBuilds {
		t.Run(dir, func(t *testing.T) {
			var sa *corev1.ServiceAccount
			for _, o := range kustomize(t, dir) {
				if s, ok := o.obj.(*corev1.ServiceAccount); ok && s.Name == "app" {
					sa = s
				}
			}
			if sa == nil {
				t.Fatal("no ServiceAccount app")
			}
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Error("ServiceAccount app: automountServiceAccountToken is not false")
			}
			if first == nil {
				first = sa
			} else if !reflect.DeepEqual(first, sa) {
				t.Errorf("ServiceAccount app differs from %s's: keep the copies identical", workloadBuilds[0])
			}
		})
	}
}

// TestVaultManifests checks the Kubernetes side of Vault's kubernetes auth:
// a reviewer allowed to review tokens and nothing else.
func TestVaultManifests(t *testing.T) {
	t.Parallel()
	var sa *corev1.ServiceAccount
	var crb *rbacv1.ClusterRoleBinding
	var secret *corev1.Secret
	for _, o := range kustomize(t, vaultSide) {
		switch obj := o.obj.(type) {
		case *corev1.ServiceAccount:
			sa = obj
		case *rbacv1.ClusterRoleBinding:
			crb = obj
		case *corev1.Secret:
			secret = obj
		}
	}
	if sa == nil || crb == nil || secret == nil {
		t.Fatalf("want a ServiceAccount, a ClusterRoleBinding and a Secret; got %v, %v, %v", sa, crb, secret)
	}
	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"bound to system:auth-delegator only", func(t *testing.T) {
			want := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"}
			if crb.RoleRef != want {
				t.Errorf("roleRef %+v, want %+v", crb.RoleRef, want)
			}
		}},
		{"the binding's only subject is the reviewer", func(t *testing.T) {
			want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}
			if !reflect.DeepEqual(crb.Subjects, want) || sa.Namespace == "" {
				t.Errorf("subjects %+v, want %+v", crb.Subjects, want)
			}
		}},
		{"the token Secret is the reviewer's", func(t *testing.T) {
			if secret.Type != corev1.SecretTypeServiceAccountToken || secret.Annotations[corev1.ServiceAccountNameKey] != sa.Name || secret.Namespace != sa.Namespace {
				t.Errorf("Secret %s/%s type %s annotations %v: want a %s for %s/%s", secret.Namespace, secret.Name, secret.Type, secret.Annotations, corev1.SecretTypeServiceAccountToken, sa.Namespace, sa.Name)
			}
			if len(secret.Data) > 0 || len(secret.StringData) > 0 {
				t.Error("the Secret carries data: the token controller fills it in")
			}
		}},
		{"the reviewer's pods get no API token", func(t *testing.T) {
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Error("automountServiceAccountToken is not false")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}
