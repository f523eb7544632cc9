// Package login obtains a Vault token for the pod: kubernetes (the
// default), jwt, approle or a given token. Every login reads its
// credential files afresh, because projected service-account tokens
// rotate.
package login

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// Auth methods.
const (
	Kubernetes = "kubernetes"
	JWT        = "jwt"
	AppRole    = "approle"
	Token      = "token"
)

// DefaultJWTFile is where Kubernetes mounts the pod's service-account token.
const DefaultJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Validate checks an auth configuration and fills the default mount. Its
// errors name the flag to fix.
func Validate(a *state.Auth, getenv func(string) string) error {
	switch a.Method {
	case Kubernetes, JWT:
		if a.Role == "" {
			return fmt.Errorf("--role is required with --auth-method %s", a.Method)
		}
		if a.JWTFile == "" {
			return fmt.Errorf("--jwt-file is required with --auth-method %s", a.Method)
		}
	case AppRole:
		if a.RoleIDFile == "" || a.SecretIDFile == "" {
			return errors.New("--role-id-file and --secret-id-file are required with --auth-method approle")
		}
	case Token:
		if a.TokenFile == "" && getenv("VAULT_TOKEN") == "" {
			return errors.New("--auth-method token needs VAULT_TOKEN or --token-file")
		}
	default:
		return fmt.Errorf("--auth-method %q: want kubernetes, jwt, approle or token", a.Method)
	}
	if a.Mount == "" {
		a.Mount = a.Method
	}
	a.Mount = strings.Trim(a.Mount, "/")
	return nil
}

// Result is a fresh token and what Vault said about it.
type Result struct {
	Token string
	Info  state.Token
}

// Login authenticates to Vault as a says and returns the token. The
// client's own token is left unset. Errors name the mount, role and file
// involved and are permanent unless vaultclient.Transient says otherwise.
func Login(ctx context.Context, c *api.Client, a state.Auth, getenv func(string) string) (*Result, error) {
	c = c.WithNamespace(c.Namespace()) // a shallow clone we may set a token on
	c.ClearToken()
	var (
		secret *api.Secret
		err    error
	)
	where := fmt.Sprintf("log in with %s auth at auth/%s", a.Method, a.Mount)
	if a.Role != "" {
		where += fmt.Sprintf(" as role %q", a.Role)
	}
	var uses int // the new token's num_uses
	switch a.Method {
	case Kubernetes, JWT:
		var jwt string
		if jwt, err = ReadJWT(a.JWTFile); err != nil {
			return nil, err
		}
		secret, uses, err = loginAt(ctx, c, a.Mount, map[string]any{"role": a.Role, "jwt": jwt})
	case AppRole:
		var roleID, secretID string
		if roleID, err = readSmallFile(a.RoleIDFile, "--role-id-file"); err != nil {
			return nil, err
		}
		if secretID, err = readSmallFile(a.SecretIDFile, "--secret-id-file"); err != nil {
			return nil, err
		}
		secret, uses, err = loginAt(ctx, c, a.Mount, map[string]any{"role_id": roleID, "secret_id": secretID})
	case Token:
		tok := getenv("VAULT_TOKEN")
		if a.TokenFile != "" {
			if tok, err = readSmallFile(a.TokenFile, "--token-file"); err != nil {
				return nil, err
			}
		}
		c.SetToken(tok)
		secret, err = c.Auth().Token().LookupSelfWithContext(ctx)
		where = "look up the token from " + tokenSource(a)
		if err == nil {
			if n, _ := secret.Data["num_uses"].(json.Number); n != "" && n != "0" {
				// Vault says -1 for a token whose last use the lookup spent.
				return nil, fmt.Errorf("the token from %s is limited in uses (num_uses %s): every renewal spends one, and Vault revokes the token, with every lease it holds, at its last; give a token without a use limit (vault token create without -use-limit)", tokenSource(a), n)
			}
			return tokenResult(tok, secret, false)
		}
	default:
		return nil, fmt.Errorf("unknown auth method %q", a.Method)
	}
	if err != nil {
		h := hint(a, err)
		if code := vaultclient.StatusCode(err); (code == 403 || code == 401) && a.Method != Token && !mounted(ctx, c, a.Mount) {
			h = fmt.Sprintf("no auth method is mounted at auth/%s: check --auth-mount (vault auth list shows the mounts)", a.Mount)
		}
		return nil, &Error{Where: where, Err: err, Hint: h}
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%s: Vault returned no token", where)
	}
	if uses > 0 {
		// Such a token would die with its leases a few requests in, while
		// the files still hold them: refused, and given back at once.
		c.SetToken(secret.Auth.ClientToken)
		_ = c.Auth().Token().RevokeSelfWithContext(ctx, "")
		return nil, &Error{Where: where, Err: fmt.Errorf("the token Vault issued is limited to %d uses", uses),
			Hint: fmt.Sprintf("every renewal and read spends a use, and Vault revokes the token with every lease it holds at the last one: set token_num_uses to 0 on the role at auth/%s", a.Mount)}
	}
	return &Result{Token: secret.Auth.ClientToken, Info: InfoFromAuth(secret.Auth)}, nil
}

// loginAt sends a login to auth/MOUNT/login. It returns Vault's answer and
// the new token's num_uses, which the answer's vault/api form leaves out.
func loginAt(ctx context.Context, c *api.Client, mount string, body map[string]any) (*api.Secret, int, error) {
	r := c.NewRequest(http.MethodPut, "/v1/auth/"+mount+"/login")
	if err := r.SetJSONBody(body); err != nil {
		return nil, 0, err
	}
	//lint:ignore SA1019 the only call that hands back the answer's body whole, and it keeps the client's timeout without cutting the body short
	resp, err := c.RawRequestWithContext(ctx, r)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return nil, 0, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLoginAnswer))
	if err != nil {
		return nil, 0, err
	}
	secret, err := api.ParseSecret(bytes.NewReader(b))
	if err != nil {
		return nil, 0, fmt.Errorf("read the login's answer: %w", err)
	}
	var raw struct {
		Auth struct {
			NumUses int `json:"num_uses"`
		} `json:"auth"`
	}
	_ = json.Unmarshal(b, &raw) // ParseSecret read it already
	return secret, raw.Auth.NumUses, nil
}

// maxLoginAnswer bounds what a login's answer is read of: a token, its
// policies and metadata.
const maxLoginAnswer = 1 << 20

// Error is a failed login. It is transient when Vault's error is.
type Error struct {
	Where string
	Err   error
	Hint  string
}

func (e *Error) Error() string {
	s := e.Where + ": " + vaultclient.Cause(e.Err)
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// mounted reports whether an auth method answers logins at auth/MOUNT.
// Vault answers 403 to a login at a path where nothing is mounted, as it
// does when a role's bindings refuse a credential: it does not reveal its
// mounts to a client without a token. A login without credentials tells
// them apart: every auth method refuses it with 400 ("missing role",
// "missing role_id").
func mounted(ctx context.Context, c *api.Client, mount string) bool {
	_, err := c.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", map[string]any{})
	code := vaultclient.StatusCode(err)
	return code != 403 && code != 401
}

func hint(a state.Auth, err error) string {
	switch code := vaultclient.StatusCode(err); {
	case code == 400 && (a.Method == Kubernetes || a.Method == JWT):
		return fmt.Sprintf("check that role %q exists at auth/%s and is bound to this service account, and that the token's audience and issuer match the role", a.Role, a.Mount)
	case (code == 403 || code == 401) && a.Method == Kubernetes && vaultclient.Cause(err) == "permission denied (HTTP 403)":
		// Vault names a binding that refuses the token; a bare "permission
		// denied" is its answer to any failed TokenReview, including one
		// it could not make. The two look the same from here, so the
		// error stays permanent: vault-init exits (the kubelet restarts
		// it with backoff) and vault-renew retries it slowly.
		return "the TokenReview API refused the token (its pod or service account is gone, or it expired), or Vault could not call that API (kubernetes_host, kubernetes_ca_cert, the reviewer's token, or an API server too slow to answer): Vault's own log says which at debug level, in its \"login unauthorized\" line"
	case (code == 400 || code == 403 || code == 401) && a.Method == AppRole:
		// Vault's user lockout (on by default for approle) answers 403
		// to every login of a role id after a few failed ones, good
		// secret id or not.
		return "check --role-id-file and --secret-id-file: a secret id ends at its secret_id_ttl or secret_id_num_uses; after a few failed logins Vault locks the role id out for its lockout_duration (vault read sys/locked-users), valid secret id or not"
	case code == 403 || code == 401:
		return fmt.Sprintf("Vault refused the credential: check the role's bindings (service account, namespace, audience) at auth/%s", a.Mount)
	case code == 0 && vaultclient.Transient(err):
		return "is Vault reachable at this address?"
	}
	return ""
}

func tokenSource(a state.Auth) string {
	if a.TokenFile != "" {
		return a.TokenFile
	}
	return "VAULT_TOKEN"
}

// InfoFromAuth turns a login response into the state's token description.
func InfoFromAuth(auth *api.SecretAuth) state.Token {
	return state.Token{
		Accessor:  auth.Accessor,
		TTL:       auth.LeaseDuration,
		Renewable: auth.Renewable,
		Policies:  auth.Policies,
		Owned:     true,
		Type:      tokenType(auth.Accessor),
	}
}

// tokenType tells a batch token from a service token in a login answer,
// whose token_type the api package does not pass on: a service token
// always has an accessor, a batch token ("hvb....") never.
func tokenType(accessor string) string {
	if accessor == "" {
		return state.TokenBatch
	}
	return "service"
}

func tokenResult(tok string, lookup *api.Secret, owned bool) (*Result, error) {
	if lookup == nil {
		return nil, errors.New("look up token: Vault returned nothing")
	}
	acc, _ := lookup.TokenAccessor()
	ttl, _ := lookup.TokenTTL()
	ren, _ := lookup.TokenIsRenewable()
	pol, _ := lookup.TokenPolicies()
	typ, _ := lookup.Data["type"].(string)
	return &Result{Token: tok, Info: state.Token{
		Accessor:  acc,
		TTL:       int(ttl.Seconds()),
		Renewable: ren,
		Policies:  pol,
		Owned:     owned,
		Type:      typ,
	}}, nil
}

// ReadJWT reads a service-account token file and checks that it looks
// like a JWT, so that a wrong path or a garbage file is reported with the
// file's name instead of Vault's generic refusal.
func ReadJWT(path string) (string, error) {
	jwt, err := readSmallFile(path, "--jwt-file")
	if err != nil {
		return "", err
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("--jwt-file %s does not hold a JWT (want header.payload.signature): mount the pod's projected service-account token there", path)
	}
	for i, p := range parts[:2] {
		raw, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || !json.Valid(raw) {
			what := [...]string{"header", "payload"}[i]
			return "", fmt.Errorf("--jwt-file %s does not hold a JWT (its %s is not base64url JSON): mount the pod's projected service-account token there", path, what)
		}
	}
	return jwt, nil
}

// readSmallFile reads a credential file, trimmed; errors name the flag and
// the file but never the content.
func readSmallFile(path, flag string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, path, unwrapPathError(err))
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s: not a regular file", flag, path)
	}
	if fi.Size() > 64<<10 {
		return "", fmt.Errorf("%s %s: %d bytes is too large for a credential file", flag, path, fi.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, path, unwrapPathError(err))
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s: file is empty", flag, path)
	}
	return s, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
