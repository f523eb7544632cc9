package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgconn"
)

// bed is shared by every test of the package.
var bed *Bed

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	bed, err = Start(ctx, log.Printf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "start test bed: %v\n", err)
		return 1
	}
	defer bed.Close()
	bed.CloseOnSignal()
	return m.Run()
}

// login logs in at auth/<mount>/login and returns the auth part of the
// answer.
func login(t *testing.T, mount string, data map[string]any) (*api.SecretAuth, error) {
	t.Helper()
	s, err := bed.Client("").Logical().WriteWithContext(t.Context(), "auth/"+mount+"/login", data)
	if err != nil {
		return nil, err
	}
	if s == nil || s.Auth == nil {
		return nil, errors.New("login answered without auth")
	}
	return s.Auth, nil
}

// appToken is a token of policy app, from a kubernetes login as default/app.
func appToken(t *testing.T) string {
	t.Helper()
	auth, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": bed.ServiceAccountJWT(Namespace, ServiceAccount, time.Hour)})
	if err != nil {
		t.Fatalf("kubernetes login: %v", err)
	}
	return auth.ClientToken
}

func wantForbidden(t *testing.T, err error) {
	t.Helper()
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		t.Fatalf("got err %v, want 403 permission denied", err)
	}
}

func TestVaultHealthy(t *testing.T) {
	h, err := bed.Root().Sys().HealthWithContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !h.Initialized || h.Sealed {
		t.Fatalf("health = %+v, want initialized and unsealed", h)
	}
}

func TestKubernetesLogin(t *testing.T) {
	t.Parallel()
	auth, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": bed.ServiceAccountJWT(Namespace, ServiceAccount, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(auth.Policies, Policy) {
		t.Errorf("policies = %v, want %q among them", auth.Policies, Policy)
	}
	if got := auth.Metadata["service_account_name"]; got != ServiceAccount {
		t.Errorf("service_account_name = %q, want %q", got, ServiceAccount)
	}
	if auth.LeaseDuration != int(time.Hour/time.Second) || !auth.Renewable {
		t.Errorf("token ttl %ds renewable %v, want 3600s renewable", auth.LeaseDuration, auth.Renewable)
	}
}

func TestKubernetesLoginRejects(t *testing.T) {
	t.Parallel()
	good := bed.ServiceAccountJWT(Namespace, ServiceAccount, time.Hour)
	dot := strings.LastIndexByte(good, '.')
	for _, tc := range []struct {
		name string
		jwt  string
	}{
		{"other service account", bed.ServiceAccountJWT(Namespace, "other", time.Hour)},
		{"other namespace", bed.ServiceAccountJWT("kube-system", ServiceAccount, time.Hour)},
		{"other audience", bed.SignServiceAccountToken(ServiceAccountToken{
			Namespace: Namespace, ServiceAccount: ServiceAccount, Audiences: []string{"https://kubernetes.default.svc.cluster.local"},
		})},
		{"expired", bed.ServiceAccountJWT(Namespace, ServiceAccount, -5*time.Minute)},
		{"bad signature", good[:dot+1] + "AAAA" + good[dot+5:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": tc.jwt})
			wantForbidden(t, err)
		})
	}
}

// TestKubernetesLoginAsksTokenReview shows Vault consults the TokenReview
// API at each login: a token of a deleted pod no longer logs in.
func TestKubernetesLoginAsksTokenReview(t *testing.T) {
	t.Parallel()
	pod := "doomed-" + randomHex(4)
	jwt := bed.SignServiceAccountToken(ServiceAccountToken{Namespace: Namespace, ServiceAccount: ServiceAccount, Pod: pod})
	if _, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": jwt}); err != nil {
		t.Fatal(err)
	}
	bed.DeletePod(Namespace, pod)
	_, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": jwt})
	wantForbidden(t, err)
}

// TestKubernetesLoginsShareAConnection: Vault's TokenReview calls share
// one HTTP/2 connection, as with kube-apiserver, so a burst of logins is
// not a burst of TLS handshakes (which, on a loaded machine, outlast
// Vault's handshake timeout and turn logins into 403s). Not parallel: the
// connection count is this test's alone.
func TestKubernetesLoginsShareAConnection(t *testing.T) {
	jwt := bed.ServiceAccountJWT(Namespace, ServiceAccount, time.Hour)
	if _, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": jwt}); err != nil {
		t.Fatal(err)
	}
	before := bed.kube.conns.Load()
	const logins = 20
	errs := make(chan error, logins)
	for range logins {
		go func() {
			_, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": jwt})
			errs <- err
		}()
	}
	for range logins {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := bed.kube.conns.Load() - before; n != 0 {
		t.Errorf("%d concurrent logins opened %d more connections to the TokenReview API, want 0: the first login's connection carries them all", logins, n)
	}
}

// TestTokenReview checks the stand-in answers as kube-apiserver does.
func TestTokenReview(t *testing.T) {
	t.Parallel()
	hc := bed.kube.srv.Client()
	review := func(bearer, token string, auds []string) (int, tokenReview) {
		t.Helper()
		body, _ := json.Marshal(tokenReview{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview",
			Spec: tokenReviewSpec{Token: token, Audiences: auds}})
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
			bed.TokenReviewURL+"/apis/authentication.k8s.io/v1/tokenreviews", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("TokenReview answered over %s, want HTTP/2 as kube-apiserver serves it", resp.Proto)
		}
		var tr tokenReview
		_ = json.NewDecoder(resp.Body).Decode(&tr)
		return resp.StatusCode, tr
	}
	good := bed.ServiceAccountJWT(Namespace, ServiceAccount, time.Hour)

	if code, _ := review("not-the-reviewer", good, nil); code != http.StatusUnauthorized {
		t.Errorf("wrong reviewer bearer: status %d, want 401", code)
	}
	code, tr := review(bed.kube.reviewerJWT, good, []string{Audience})
	if code != http.StatusCreated || !tr.Status.Authenticated ||
		tr.Status.User.Username != "system:serviceaccount:default:app" ||
		!slices.Equal(tr.Status.Audiences, []string{Audience}) {
		t.Errorf("good token: status %d %+v", code, tr.Status)
	}
	// Without audiences the API server's own audience applies.
	if _, tr := review(bed.kube.reviewerJWT, good, nil); tr.Status.Authenticated {
		t.Errorf("token for %q authenticated against the API server audience", Audience)
	}
	if _, tr := review(bed.kube.reviewerJWT, good+"x", []string{Audience}); tr.Status.Authenticated || tr.Status.Error == "" {
		t.Errorf("bad token: %+v, want unauthenticated with an error", tr.Status)
	}
}

func TestJWTLogin(t *testing.T) {
	t.Parallel()
	auth, err := login(t, "jwt", map[string]any{"role": Role, "jwt": bed.ServiceAccountJWT(Namespace, ServiceAccount, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(auth.Policies, Policy) {
		t.Errorf("policies = %v, want %q among them", auth.Policies, Policy)
	}
	_, err = login(t, "jwt", map[string]any{"role": Role, "jwt": bed.ServiceAccountJWT(Namespace, "other", time.Hour)})
	if err == nil {
		t.Error("jwt login as default/other succeeded")
	}
}

func TestAppRoleLogin(t *testing.T) {
	t.Parallel()
	roleIDFile, secretIDFile, err := bed.AppRoleCreds(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var data = map[string]any{}
	for key, path := range map[string]string{"role_id": roleIDFile, "secret_id": secretIDFile} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", path, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(path)
		data[key] = string(b)
	}
	auth, err := login(t, "approle", data)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(auth.Policies, Policy) {
		t.Errorf("policies = %v, want %q among them", auth.Policies, Policy)
	}
}

func TestWriteJWT(t *testing.T) {
	t.Parallel()
	path := bed.WriteJWT(t.TempDir(), Namespace, ServiceAccount)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	jwt, _ := os.ReadFile(path)
	if _, err := login(t, "kubernetes", map[string]any{"role": Role, "jwt": string(jwt)}); err != nil {
		t.Errorf("login with the written token: %v", err)
	}
}

func TestDynamicDatabaseCreds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := bed.Client(appToken(t))
	s, err := c.Logical().ReadWithContext(ctx, "database/creds/"+DBRole)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := s.Data["username"].(string)
	pass, _ := s.Data["password"].(string)
	if s.LeaseID == "" || s.LeaseDuration != 3600 || !s.Renewable {
		t.Errorf("lease %q %ds renewable %v, want a renewable 1h lease", s.LeaseID, s.LeaseDuration, s.Renewable)
	}

	conn, err := bed.PGConnect(ctx, user, pass)
	if err != nil {
		t.Fatalf("connect with dynamic creds: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil || n != 2 {
		t.Errorf("select: %d rows, err %v; want 2 rows", n, err)
	}
	_, err = conn.Exec(ctx, "INSERT INTO items (id, name) VALUES (3, 'cherry')")
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("insert: err %v, want insufficient_privilege (42501)", err)
	}
	conn.Close(ctx)

	if _, err := c.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": s.LeaseID}); err != nil {
		t.Fatalf("revoke lease: %v", err)
	}
	if conn, err := bed.PGConnect(ctx, user, pass); err == nil {
		conn.Close(ctx)
		t.Fatal("login still works after the lease was revoked")
	}
	super, err := bed.PGSuperuser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	var exists bool
	if err := super.QueryRow(ctx, "SELECT exists(SELECT 1 FROM pg_roles WHERE rolname = $1)", user).Scan(&exists); err != nil || exists {
		t.Errorf("role %s exists=%v (err %v) after revocation, want dropped", user, exists, err)
	}
}

func TestCreateDBRole(t *testing.T) {
	t.Parallel()
	if err := bed.CreateDBRole("short", time.Minute, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	s, err := bed.Client(appToken(t)).Logical().ReadWithContext(t.Context(), "database/creds/short")
	if err != nil {
		t.Fatal(err)
	}
	if s.LeaseDuration != 60 {
		t.Errorf("lease duration %ds, want 60s", s.LeaseDuration)
	}
}

func TestCreateK8sRole(t *testing.T) {
	t.Parallel()
	if err := bed.CreateK8sRole("short", time.Minute, 2*time.Minute, Policy); err != nil {
		t.Fatal(err)
	}
	auth, err := login(t, "kubernetes", map[string]any{"role": "short", "jwt": bed.ServiceAccountJWT(Namespace, ServiceAccount, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if auth.LeaseDuration != 60 {
		t.Errorf("token ttl %ds, want 60s", auth.LeaseDuration)
	}
}

func TestStaticDatabaseCreds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := bed.Client(appToken(t)).Logical().ReadWithContext(ctx, "database/static-creds/"+StaticRole)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := s.Data["username"].(string)
	pass, _ := s.Data["password"].(string)
	if user != PGStaticUser {
		t.Errorf("username %q, want %q", user, PGStaticUser)
	}
	conn, err := bed.PGConnect(ctx, user, pass)
	if err != nil {
		t.Fatalf("connect with static creds (did Vault's rotation as %s work?): %v", PGAdminUser, err)
	}
	conn.Close(ctx)
}

func TestKV(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := bed.Client(appToken(t))
	s, err := c.Logical().ReadWithContext(ctx, KVPath)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := s.Data["data"].(map[string]any)
	if data["api_key"] != bed.KVAPIKey || data["endpoint"] != KVEndpoint {
		t.Errorf("data = %v, want api_key and endpoint %q", data, KVEndpoint)
	}
	_, err = c.Logical().ReadWithContext(ctx, ForbiddenKVPath)
	wantForbidden(t, err)
}

func TestProxy(t *testing.T) {
	t.Parallel()
	p, err := NewProxy(bed.VaultHostPort)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	hc := &http.Client{Timeout: time.Second}
	health := func() error {
		resp, err := hc.Get("http://" + p.Addr() + "/v1/sys/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	if err := health(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Cut()
	if err := health(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("cut: err %v, want connection refused", err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := health(); err != nil {
		t.Errorf("restored: %v", err)
	}
	if err := p.Blackhole(); err != nil {
		t.Fatal(err)
	}
	var ne interface{ Timeout() bool }
	if err := health(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("blackhole: err %v, want a timeout", err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := health(); err != nil {
		t.Errorf("restored after blackhole: %v", err)
	}
}
