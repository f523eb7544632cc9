// Package state is the contract between vault-init, vault-renew and
// vault-revoke: the token file and state.json in the state directory. It
// holds no secret value; the token lives in its own file, like
// ~/.vault-token.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podlease/podlease/internal/atomicfile"
)

// Version is the state.json format this build writes. It also reads
// version 1, which held a SHA-256 of each rendered file (see upgradeV1).
const Version = 2

// File names inside the state directory.
const (
	FileName  = "state.json"
	TokenName = "token"
	// PendingName is vault-init's journal of a run in progress: the
	// token it logged in with, until state.json records it.
	PendingName = "token.pending"
	lockName    = ".lock"
)

// ErrNotExist is returned by Load when the state directory holds no state:
// vault-init has not run, or vault-revoke already cleaned up.
var ErrNotExist = errors.New("no state")

// State is the content of state.json.
type State struct {
	Version    int      `json:"version"`
	VaultAddr  string   `json:"vault_addr"`
	Namespace  string   `json:"namespace,omitempty"`
	Auth       Auth     `json:"auth"`
	Token      Token    `json:"token"`
	SecretsDir string   `json:"secrets_dir"`
	Secrets    []Secret `json:"secrets"`
	// Retiring are leases replaced by a rotation, kept alive for a grace
	// period so connection pools can drain, then revoked by vault-renew
	// (or by vault-revoke, if the pod ends first).
	Retiring []Retiring `json:"retiring,omitempty"`
	// Pending are credentials vault-renew fetched and is about to write,
	// recorded before their files are replaced, so that a crash in between
	// leaves no lease that nobody knows: at start vault-renew adopts a
	// pending credential whose file was written and revokes one whose file
	// was not; vault-revoke revokes them with the rest.
	Pending   []Secret  `json:"pending,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	// RevokedAt is set by vault-revoke; after it, nobody renews or issues.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Auth says how to log in again.
type Auth struct {
	Method       string `json:"method"`
	Mount        string `json:"mount"`
	Role         string `json:"role,omitempty"`
	JWTFile      string `json:"jwt_file,omitempty"`
	RoleIDFile   string `json:"role_id_file,omitempty"`
	SecretIDFile string `json:"secret_id_file,omitempty"`
	TokenFile    string `json:"token_file,omitempty"`
}

// Token describes the Vault token in the token file (never the token
// itself).
type Token struct {
	Accessor  string    `json:"accessor"`
	TTL       int       `json:"ttl"` // seconds, as Vault reports it
	Renewable bool      `json:"renewable"`
	Policies  []string  `json:"policies,omitempty"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Orphan tokens supplied by the user (auth method "token") are not
	// revoked by vault-revoke unless podlease created them.
	Owned bool `json:"owned"`
	// Type is Vault's token type: "service", or "batch" for a token that
	// has no accessor and can be neither renewed nor revoked; its leases
	// end with it and must be revoked one by one. Empty in a state
	// written before this field existed.
	Type string `json:"type,omitempty"`
}

// TokenBatch is Token.Type for a batch token.
const TokenBatch = "batch"

// Batch reports whether the token is a batch token: Vault said so, or the
// token has no accessor (service tokens always have one).
func (t Token) Batch() bool { return t.Type == TokenBatch }

// Retiring is a replaced lease waiting for revocation.
type Retiring struct {
	Secret   string    `json:"secret"`
	LeaseID  string    `json:"lease_id"`
	RevokeAt time.Time `json:"revoke_at"`
}

// Kinds of secret, which decide how vault-renew keeps them fresh.
const (
	KindLeased = "leased" // has a lease id: renew, then rotate before max TTL
	KindStatic = "static" // database/static-creds: re-read before its ttl ends
	KindKV     = "kv"     // KV and other unleased data: re-read on an interval
)

// Secret is one rendered secret file and the lease behind it.
type Secret struct {
	Name          string    `json:"name"`
	Path          string    `json:"path"`
	ReadPath      string    `json:"read_path,omitempty"` // the path read, when it differs (KV v2: secret/app reads secret/data/app)
	Kind          string    `json:"kind"`
	LeaseID       string    `json:"lease_id,omitempty"`
	LeaseDuration int       `json:"lease_duration"` // seconds
	Renewable     bool      `json:"renewable"`
	IssuedAt      time.Time `json:"issued_at"`
	ExpiresAt     time.Time `json:"expires_at,omitempty"`
	File          string    `json:"file"`
	FileMode      string    `json:"file_mode"` // octal, e.g. "0440"
	Format        string    `json:"format"`
	Template      string    `json:"template,omitempty"`      // template text
	TemplateFile  string    `json:"template_file,omitempty"` // where it came from
	// FileInode is the inode of File as this credential's write left it.
	// A rotation interrupted between replacing the file and saving the
	// state is settled by it: a file with another inode was replaced. It
	// says nothing about the content, unlike a hash, which for a short
	// secret (a PIN) gives the value away to anyone who reads state.json.
	FileInode uint64 `json:"file_inode,omitempty"`
}

// VaultPath is the path Vault is read at for s.
func (s *Secret) VaultPath() string {
	if s.ReadPath != "" {
		return s.ReadPath
	}
	return s.Path
}

// Mode parses FileMode.
func (s *Secret) Mode() (os.FileMode, error) {
	return ParseMode(s.FileMode)
}

// ParseMode parses an octal permission such as "0440".
func ParseMode(s string) (os.FileMode, error) {
	var m uint32
	if _, err := fmt.Sscanf(s, "%o", &m); err != nil || m > 0o777 || strings.TrimLeft(s, "01234567") != "" {
		return 0, fmt.Errorf("file mode %q: want octal permissions such as 0440", s)
	}
	return os.FileMode(m), nil
}

// Lookup returns the secret called name, or nil.
func (s *State) Lookup(name string) *Secret {
	for i := range s.Secrets {
		if s.Secrets[i].Name == name {
			return &s.Secrets[i]
		}
	}
	return nil
}

// Load reads dir/state.json. It returns ErrNotExist (wrapped) when there
// is none, and a clear error for a corrupt file or a newer format.
func Load(dir string) (*State, error) {
	path := filepath.Join(dir, FileName)
	b, err := ReadFile(dir, FileName)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return Decode(path, b)
}

// Decode parses state.json content; path only names the file in errors.
func Decode(path string, b []byte) (*State, error) {
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%s is not valid state (%v): run vault-init again", path, err)
	}
	if probe.Version == 1 {
		up, err := upgradeV1(b)
		if err != nil {
			return nil, fmt.Errorf("%s is not valid state (%v): run vault-init again", path, err)
		}
		b, probe.Version = up, Version
	}
	if probe.Version == 0 {
		return nil, fmt.Errorf("%s has no format version: it was not written by vault-init; run vault-init again", path)
	}
	if probe.Version != Version {
		return nil, fmt.Errorf("%s has format version %d, this build reads versions 1 to %d: use the same podlease version for every container", path, probe.Version, Version)
	}
	var s State
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s is not valid state (%v): run vault-init again", path, err)
	}
	if s.VaultAddr == "" {
		return nil, fmt.Errorf("%s has no vault_addr: run vault-init again", path)
	}
	// vault-renew writes and vault-revoke removes every secret's file: an
	// edited state must not point them at a file elsewhere.
	for _, sec := range append(slices.Clip(s.Secrets), s.Pending...) {
		if sec.Name == "" || sec.Name == "." || sec.Name == ".." || strings.ContainsAny(sec.Name, "/\x00") ||
			filepath.Clean(sec.File) != filepath.Join(s.SecretsDir, sec.Name) {
			return nil, fmt.Errorf("%s is not valid state (secret %q: file %q is not NAME in secrets_dir %q): run vault-init again", path, sec.Name, sec.File, s.SecretsDir)
		}
	}
	return &s, nil
}

// Save writes dir/state.json atomically with mode 0600. A state larger
// than the readers take (MaxFile) is refused, not written.
func Save(dir string, s *State) error {
	s.Version = Version
	s.UpdatedAt = time.Now().UTC().Truncate(time.Second)
	b, err := encode(s)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if len(b) > MaxFile {
		return fmt.Errorf("state.json would be %d bytes, more than the %d vault-renew and vault-revoke read: give fewer or smaller templates", len(b), MaxFile)
	}
	return atomicfile.Write(filepath.Join(dir, FileName), b, 0o600)
}

// encode is state.json's text: indented, and without escaping <, > and &
// (which would make a template's text up to six times longer).
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// TextSize is how many bytes text takes in state.json, quoted.
func TextSize(text string) int {
	b, _ := encode(text)
	return len(b) - 1 // the encoder's newline
}

// ReadToken reads the token file.
func ReadToken(dir string) (string, error) {
	path := filepath.Join(dir, TokenName)
	b, err := ReadFile(dir, TokenName)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty: run vault-init again", path)
	}
	return tok, nil
}

// WriteToken writes the token file atomically with mode 0600.
func WriteToken(dir, token string) error {
	return atomicfile.Write(filepath.Join(dir, TokenName), []byte(token), 0o600)
}

// Lock takes an exclusive lock on the state directory so that the three
// binaries never interleave a read-modify-write of state.json. It waits
// for the lock until ctx is done; the returned function releases it.
func Lock(ctx context.Context, dir string) (unlock func(), err error) {
	if err := CheckDir(dir); err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	// O_NOFOLLOW: a symlink planted as the lock file must not make us
	// create or open a file elsewhere.
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if fi, err := f.Stat(); err != nil || fileTrust(f.Name(), fi, os.Getuid()) != nil {
		f.Close()
		if err == nil {
			err = fileTrust(f.Name(), fi, os.Getuid())
		}
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock state dir %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock state dir %s: held by another podlease process: %w", dir, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// sidecarLockName is held by vault-renew for its whole life.
const sidecarLockName = ".sidecar.lock"

// ErrSidecarRunning is returned by LockSidecar when another vault-renew
// holds the state dir.
var ErrSidecarRunning = errors.New("another vault-renew is running on this state dir")

// LockSidecar takes the state dir for one vault-renew for as long as it
// runs: two sidecars renewing and rotating the same leases would each
// replace credentials the other does not know. It does not wait: a second
// instance gets ErrSidecarRunning (wrapped, naming the holder's pid). The
// lock is released when the returned function is called or the process
// ends. It is separate from Lock, which vault-revoke and vault-renew take
// for each read-modify-write of state.json.
func LockSidecar(dir string) (unlock func(), err error) {
	if err := CheckDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, sidecarLockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = fileTrust(path, fi, os.Getuid())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := io.ReadAll(io.LimitReader(f, 32)); rerr == nil && len(bytes.TrimSpace(b)) > 0 {
			holder = " (pid " + string(bytes.TrimSpace(b)) + ")"
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w%s: state dir %s: one sidecar per pod; stop the other one first", ErrSidecarRunning, holder, dir)
		}
		return nil, fmt.Errorf("lock state dir %s: %w", dir, err)
	}
	// The holder's pid, for the message a second instance prints.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
