package testbed

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the Kubernetes stand-in.
const (
	// Issuer is the iss claim of every service-account token the bed signs,
	// as on a cluster whose API server runs with the default
	// --service-account-issuer.
	Issuer = "https://kubernetes.default.svc.cluster.local"
	// Audience is the aud claim of ServiceAccountJWT tokens, and the
	// audience the bed's Vault roles require.
	Audience = "vault"

	// leeway is how far past exp (or before nbf) the API server still
	// accepts a token, as kube-apiserver does.
	leeway = time.Minute
)

// ServiceAccountToken describes a projected service-account token to sign.
type ServiceAccountToken struct {
	// Namespace and ServiceAccount name the service account (sub is
	// system:serviceaccount:<Namespace>:<ServiceAccount>).
	Namespace      string
	ServiceAccount string
	// Pod is the pod the token is bound to; default "<ServiceAccount>-pod".
	Pod string
	// Audiences is the aud claim; default []string{Audience}.
	Audiences []string
	// TTL is exp minus iat; default one hour. A negative TTL gives a token
	// that expired in the past.
	TTL time.Duration
}

// kube is the Kubernetes stand-in: the service-account signing key and the
// TokenReview API.
type kube struct {
	key         *rsa.PrivateKey
	kid         string
	pubPEM      string
	ca          *CA // signed srv's certificate
	srv         *httptest.Server
	reviewerJWT string

	conns atomic.Int64 // connections srv accepted

	mu      sync.Mutex
	deleted map[string]bool // "serviceaccount/ns/name" and "pod/ns/name" of deleted objects
}

func newKube() (*kube, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service-account signing key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	k := &kube{
		key:     key,
		kid:     base64.RawURLEncoding.EncodeToString(sum[:]),
		pubPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		deleted: map[string]bool{},
	}
	// Vault's kubernetes auth method reviews tokens as this service account
	// (the usual vault-auth account with system:auth-delegator).
	k.reviewerJWT = k.sign(ServiceAccountToken{
		Namespace: "vault", ServiceAccount: "vault-auth",
		Audiences: []string{Issuer}, TTL: 24 * time.Hour,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", k.tokenReview)
	// Served as kube-apiserver serves it, over HTTP/2, so that Vault's
	// reviews share one connection. Over HTTP/1.1 every concurrent review
	// opens a connection of its own: 200 pods starting at once on a loaded
	// machine queued enough TLS handshakes to pass Vault's 10 s handshake
	// timeout, and Vault answers a login whose review failed with a 403.
	// An ECDSA certificate keeps the handshakes that remain cheap.
	if k.ca, err = NewCA("podlease-testbed-kubernetes-ca"); err != nil {
		return nil, err
	}
	certDER, certKey, err := k.ca.Issue("kube-apiserver", nil, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	k.srv = httptest.NewUnstartedServer(mux)
	k.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{certDER}, PrivateKey: certKey}}}
	k.srv.EnableHTTP2 = true
	k.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			k.conns.Add(1)
		}
	}
	k.srv.StartTLS()
	return k, nil
}

func (k *kube) close() {
	if k != nil && k.srv != nil {
		k.srv.Close()
	}
}

// caPEM is the CA certificate (PEM) that verifies the TokenReview server.
func (k *kube) caPEM() string {
	return string(k.ca.PEM)
}

// uid derives a stable UID from an object's identity, so every token of a
// service account or pod carries the same uid, as on a cluster.
func uid(kind, ns, name string) string {
	s := sha256.Sum256([]byte(kind + "/" + ns + "/" + name))
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

type objectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

type kubernetesClaim struct {
	Namespace      string    `json:"namespace"`
	Pod            objectRef `json:"pod"`
	ServiceAccount objectRef `json:"serviceaccount"`
}

// saClaims are the claims of a projected service-account token.
type saClaims struct {
	Aud        []string        `json:"aud"`
	Exp        int64           `json:"exp"`
	Iat        int64           `json:"iat"`
	Iss        string          `json:"iss"`
	Jti        string          `json:"jti"`
	Kubernetes kubernetesClaim `json:"kubernetes.io"`
	Nbf        int64           `json:"nbf"`
	Sub        string          `json:"sub"`
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// sign returns an RS256 JWT shaped like a projected service-account token.
func (k *kube) sign(t ServiceAccountToken) string {
	if t.Pod == "" {
		t.Pod = t.ServiceAccount + "-pod"
	}
	if t.Audiences == nil {
		t.Audiences = []string{Audience}
	}
	if t.TTL == 0 {
		t.TTL = time.Hour
	}
	now := time.Now()
	iat := now
	if t.TTL < 0 {
		iat = now.Add(t.TTL).Add(-time.Hour)
	}
	claims := saClaims{
		Aud: t.Audiences,
		Exp: now.Add(t.TTL).Unix(),
		Iat: iat.Unix(),
		Iss: Issuer,
		Jti: randomUUID(),
		Kubernetes: kubernetesClaim{
			Namespace:      t.Namespace,
			Pod:            objectRef{Name: t.Pod, UID: uid("pod", t.Namespace, t.Pod)},
			ServiceAccount: objectRef{Name: t.ServiceAccount, UID: uid("serviceaccount", t.Namespace, t.ServiceAccount)},
		},
		Nbf: iat.Unix(),
		Sub: "system:serviceaccount:" + t.Namespace + ":" + t.ServiceAccount,
	}
	header, _ := json.Marshal(jwtHeader{Alg: "RS256", Kid: k.kid})
	payload, _ := json.Marshal(claims)
	signed := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.key, crypto.SHA256, digest[:])
	if err != nil {
		panic(fmt.Sprintf("sign jwt: %v", err)) // cannot fail with a valid key
	}
	return signed + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// verify checks a token's signature, issuer and validity window, like the
// API server's service-account authenticator.
func (k *kube) verify(token string) (*saClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("token is not a JWT")
	}
	var h jwtHeader
	if err := decodeSegment(parts[0], &h); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if h.Alg != "RS256" {
		return nil, fmt.Errorf("unexpected signing algorithm %q", h.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&k.key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
		return nil, errors.New("token signature is invalid")
	}
	var c saClaims
	if err := decodeSegment(parts[1], &c); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if c.Iss != Issuer {
		return nil, fmt.Errorf("token issuer %q is not trusted", c.Iss)
	}
	now := time.Now()
	if now.After(time.Unix(c.Exp, 0).Add(leeway)) {
		return nil, errors.New("token has expired")
	}
	if now.Before(time.Unix(c.Nbf, 0).Add(-leeway)) {
		return nil, errors.New("token is not valid yet")
	}
	ns, sa, ok := strings.Cut(strings.TrimPrefix(c.Sub, "system:serviceaccount:"), ":")
	if !ok || ns != c.Kubernetes.Namespace || sa != c.Kubernetes.ServiceAccount.Name {
		return nil, errors.New("token subject does not match its kubernetes.io claim")
	}
	k.mu.Lock()
	saGone := k.deleted["serviceaccount/"+ns+"/"+sa]
	podGone := k.deleted["pod/"+ns+"/"+c.Kubernetes.Pod.Name]
	k.mu.Unlock()
	if saGone {
		return nil, fmt.Errorf("service account %s/%s has been deleted", ns, sa)
	}
	if podGone {
		return nil, fmt.Errorf("pod %s/%s has been deleted", ns, c.Kubernetes.Pod.Name)
	}
	return &c, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// The TokenReview wire types (authentication.k8s.io/v1), reduced to the
// fields a client reads.
type (
	tokenReview struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   map[string]any    `json:"metadata"`
		Spec       tokenReviewSpec   `json:"spec"`
		Status     tokenReviewStatus `json:"status"`
	}
	tokenReviewSpec struct {
		Token     string   `json:"token,omitempty"`
		Audiences []string `json:"audiences,omitempty"`
	}
	tokenReviewStatus struct {
		Authenticated bool     `json:"authenticated,omitempty"`
		User          userInfo `json:"user"`
		Audiences     []string `json:"audiences,omitempty"`
		Error         string   `json:"error,omitempty"`
	}
	userInfo struct {
		Username string              `json:"username,omitempty"`
		UID      string              `json:"uid,omitempty"`
		Groups   []string            `json:"groups,omitempty"`
		Extra    map[string][]string `json:"extra,omitempty"`
	}
)

// tokenReview serves POST /apis/authentication.k8s.io/v1/tokenreviews the
// way kube-apiserver does for service-account tokens.
func (k *kube) tokenReview(w http.ResponseWriter, r *http.Request) {
	// The caller must itself authenticate, as the reviewer service account.
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(bearer)), []byte(k.reviewerJWT)) != 1 {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		return
	}
	var req tokenReview
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", "decode TokenReview: "+err.Error())
		return
	}
	if req.Spec.Token == "" {
		writeStatus(w, http.StatusUnprocessableEntity, "Invalid", "TokenReview.authentication.k8s.io is invalid: spec.token: Required value")
		return
	}

	resp := tokenReview{
		APIVersion: "authentication.k8s.io/v1",
		Kind:       "TokenReview",
		Metadata:   map[string]any{"creationTimestamp": nil},
		Spec:       req.Spec,
	}
	// Without spec.audiences the API server checks against its own
	// audience, which by default is the issuer.
	want := req.Spec.Audiences
	if len(want) == 0 {
		want = []string{Issuer}
	}
	c, err := k.verify(req.Spec.Token)
	var auds []string
	if err == nil {
		for _, a := range c.Aud {
			if slices.Contains(want, a) {
				auds = append(auds, a)
			}
		}
		if len(auds) == 0 {
			err = fmt.Errorf("token audiences %q is invalid for the target audiences %q", c.Aud, want)
		}
	}
	if err != nil {
		resp.Status.Error = "[invalid bearer token, " + err.Error() + "]"
	} else {
		resp.Status = tokenReviewStatus{
			Authenticated: true,
			User: userInfo{
				Username: c.Sub,
				UID:      c.Kubernetes.ServiceAccount.UID,
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + c.Kubernetes.Namespace, "system:authenticated"},
				Extra: map[string][]string{
					"authentication.kubernetes.io/credential-id": {"JTI=" + c.Jti},
					"authentication.kubernetes.io/pod-name":      {c.Kubernetes.Pod.Name},
					"authentication.kubernetes.io/pod-uid":       {c.Kubernetes.Pod.UID},
				},
			},
		}
		if len(req.Spec.Audiences) > 0 {
			resp.Status.Audiences = auds
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(resp)
}

// writeStatus answers with a metav1.Status error, as the API server does.
func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code,
	})
}

// ServiceAccountJWT returns a projected service-account token for service
// account sa in namespace ns, valid for ttl, with audience Audience.
func (b *Bed) ServiceAccountJWT(ns, sa string, ttl time.Duration) string {
	return b.kube.sign(ServiceAccountToken{Namespace: ns, ServiceAccount: sa, TTL: ttl})
}

// SignServiceAccountToken returns a projected service-account token as t
// describes, for tests that need another pod or audience.
func (b *Bed) SignServiceAccountToken(t ServiceAccountToken) string {
	return b.kube.sign(t)
}

// WriteJWT writes a one-hour ServiceAccountJWT for ns/sa to dir/token with
// mode 0600, as the kubelet projects it, and returns the file's path.
// Writing again replaces the file atomically, like a kubelet rotation. It
// panics if the file cannot be written: that is a broken test machine.
func (b *Bed) WriteJWT(dir, ns, sa string) string {
	path := filepath.Join(dir, "token")
	if err := writeFileAtomic(path, []byte(b.ServiceAccountJWT(ns, sa, time.Hour)), 0o600); err != nil {
		panic(fmt.Sprintf("testbed: write service-account token: %v", err))
	}
	return path
}

// DeleteServiceAccount makes the TokenReview API reject every token of
// ns/sa from now on, as after `kubectl delete serviceaccount`.
func (b *Bed) DeleteServiceAccount(ns, sa string) {
	b.kube.mu.Lock()
	defer b.kube.mu.Unlock()
	b.kube.deleted["serviceaccount/"+ns+"/"+sa] = true
}

// DeletePod makes the TokenReview API reject every token bound to pod
// ns/pod from now on, as after the pod is deleted.
func (b *Bed) DeletePod(ns, pod string) {
	b.kube.mu.Lock()
	defer b.kube.mu.Unlock()
	b.kube.deleted["pod/"+ns+"/"+pod] = true
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
