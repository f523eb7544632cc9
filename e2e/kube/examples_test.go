package kube

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Scenario 9: the two examples built with manifests/components/podlease,
// configured only by pod annotations (podlease.io/* in one, the Vault Agent
// injector's vault.hashicorp.com/* in the other), run on the node: the pod
// becomes Ready, the app logs in to PostgreSQL with what vault-init wrote
// to /vault/secrets, and once the workload is deleted the database user,
// the lease and the token are gone. The roles and paths the annotations
// name (role app, database/creds/app) are those manifests/vault/setup.sh
// made; the test overlay only adds --auth-mount, as for the other
// scenarios.
func TestScenario9Examples(t *testing.T) {
	for _, ex := range []struct {
		base   string
		file   string            // the secret file, under /vault/secrets
		appEnv map[string]string // how the test app reads it
		// password finds the password in the file, and checks its shape.
		password *regexp.Regexp
	}{
		{
			base:     "manifests/examples/annotations",
			file:     "db",
			appEnv:   map[string]string{"INTERVAL": "100ms"},
			password: regexp.MustCompile(`(?m)^PASSWORD="([^"]+)"$`),
		},
		{
			// The template of agent-inject-template-db-creds: one line, the
			// cluster's PostgreSQL service, a newline after it.
			base:     "manifests/examples/from-agent-injector",
			file:     "db-creds",
			appEnv:   map[string]string{"INTERVAL": "100ms", "SECRETS_FILE": "/vault/secrets/db-creds", "SECRETS_FORMAT": "url"},
			password: regexp.MustCompile(`\Apostgres://v-[^:@/]+:([^@/]+)@postgres\.db\.svc:5432/app\?sslmode=disable\n\z`),
		},
	} {
		t.Run(strings.TrimPrefix(ex.base, "manifests/examples/"), func(t *testing.T) {
			o := overlay{base: ex.base, kind: "Deployment", name: "app", component: true, listen: freePort(t), appEnv: ex.appEnv}
			dir := o.write(t)
			printDiff(t, ex.base, dir)
			t0 := time.Now()
			kubectl(t, "apply", "-k", dir)
			t.Cleanup(func() { deleteAndWait(t, dir, appSel) })
			p := readyPods(t, appSel, 1, 2*time.Minute)[0]
			readyIn := time.Since(t0)
			w := watchLogs(t, p)
			waitFor(t, "5 successful app queries", 30*time.Second, func() bool { return w.count("app", "query ok") >= 5 })

			if n := w.count("app", "query failed"); n > 0 {
				t.Errorf("%d app queries failed", n)
			}
			users := w.appUsers()
			if len(users) != 1 || !roleExists(t, users[0]) {
				t.Fatalf("app should query as one Vault-made user that exists; saw %v", users)
			}
			secret, err := os.ReadFile(node.PodVolumePath(p.Metadata.UID, "vault-secrets", ex.file))
			if err != nil {
				t.Fatal(err)
			}
			password := ex.password.FindSubmatch(secret)
			if password == nil {
				// The file holds a password: name its shape, never print it.
				t.Fatalf("/vault/secrets/%s (%d bytes) does not have the shape %s", ex.file, len(secret), ex.password)
			}
			if !strings.Contains(string(secret), users[0]) {
				t.Errorf("/vault/secrets/%s does not name the user the app logged in as (%s)", ex.file, users[0])
			}
			for _, c := range []string{"vault-init", "vault-renew", "app"} {
				for _, l := range w.lines(c) {
					if strings.Contains(l.Text, string(password[1])) {
						t.Errorf("container %s logged the database password", c)
					}
				}
			}
			st := readPodState(t, p)
			queries := w.count("app", "query ok")

			t1 := time.Now()
			deleteAndWait(t, dir, appSel)
			podsGone := time.Since(t1)
			waitFor(t, "database user "+users[0]+" dropped", 30*time.Second, func() bool { return !roleExists(t, users[0]) })
			userGone := time.Since(t1)
			if tokenAlive(t, st.Token.Accessor) {
				t.Errorf("the pod's Vault token is still valid")
			}
			if leaseAlive(t, st.Secrets[0].LeaseID) {
				t.Errorf("the pod's lease is still valid")
			}
			t.Logf("scenario 9 (%s): Ready %s after kubectl apply -k; app read /vault/secrets/%s and ran %d queries as %s, 0 failed; after kubectl delete -k the pod was gone in %s and the user in %s (polled every 100 ms), token and lease revoked",
				strings.TrimPrefix(ex.base, "manifests/examples/"), secs(readyIn), ex.file, queries, users[0], secs(podsGone), secs(userGone))
		})
	}
}
