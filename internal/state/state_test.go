package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func fixture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "state-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeFixture(t *testing.T) {
	t.Parallel()
	s, err := Decode("state.json", fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	if s.VaultAddr != "https://vault.vault.svc:8200" || s.Auth.Role != "web" || s.Token.Accessor != "acc-1234" {
		t.Errorf("decoded %+v", s)
	}
	db := s.Lookup("db")
	if db == nil || db.LeaseID != "database/creds/web/AbCd" || db.Kind != KindLeased {
		t.Fatalf("Lookup(db) = %+v", db)
	}
	if m, err := db.Mode(); err != nil || m != 0o440 {
		t.Errorf("Mode() = %#o, %v", m, err)
	}
	if s.Lookup("nope") != nil {
		t.Error("Lookup(nope) found something")
	}
	if len(s.Retiring) != 1 || !s.Retiring[0].RevokeAt.Equal(time.Date(2025, 1, 2, 3, 9, 5, 0, time.UTC)) {
		t.Errorf("retiring = %+v", s.Retiring)
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	good := string(fixture(t))
	for _, tc := range []struct {
		name, content string
		want          []string // substrings of the error
	}{
		{"empty", "", []string{"is not valid state", "run vault-init again"}},
		{"not json", "token: hvs.x", []string{"is not valid state", "run vault-init again"}},
		{"truncated", good[:len(good)/2], []string{"is not valid state", "unexpected end of JSON input"}},
		{"trailing garbage", good + "}", []string{"is not valid state"}},
		{"two documents", good + good, []string{"is not valid state"}},
		{"future version", strings.Replace(good, `"version": 1`, `"version": 3`, 1), []string{"format version 3", "reads versions 1 to 2", "same podlease version"}},
		{"version 2 with a version 1 checksum", strings.Replace(good, `"version": 1`, `"version": 2`, 1), []string{"is not valid state", `unknown field "checksum"`}},
		{"no version", strings.Replace(good, `"version": 1,`, ``, 1), []string{"has no format version"}},
		{"version as string", strings.Replace(good, `"version": 1`, `"version": "1"`, 1), []string{"is not valid state"}},
		{"unknown field", strings.Replace(good, `"namespace"`, `"surprise": true, "namespace"`, 1), []string{"is not valid state", `unknown field "surprise"`}},
		{"unknown nested field", strings.Replace(good, `"accessor"`, `"client_token": "x", "accessor"`, 1), []string{`unknown field "client_token"`}},
		{"wrong type", strings.Replace(good, `"ttl": 3600`, `"ttl": "1h"`, 1), []string{"is not valid state"}},
		{"bad time", strings.Replace(good, `"2025-01-02T03:04:06Z"`, `"yesterday"`, 1), []string{"is not valid state"}},
		{"missing vault_addr", strings.Replace(good, `"vault_addr": "https://vault.vault.svc:8200",`, ``, 1), []string{"has no vault_addr", "run vault-init again"}},
		{"empty vault_addr", strings.Replace(good, `"https://vault.vault.svc:8200"`, `""`, 1), []string{"has no vault_addr"}},
		{"null", "null", []string{"has no format version"}},
		{"array", "[]", []string{"is not valid state"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const path = "/vault/state/state.json"
			s, err := Decode(path, []byte(tc.content))
			if err == nil {
				t.Fatalf("no error; decoded %+v", s)
			}
			if !strings.HasPrefix(err.Error(), path+" ") {
				t.Errorf("error %q does not start with the file name", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestSaveLoad(t *testing.T) {
	t.Parallel()
	in, err := Decode("fixture", fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// An older file with a looser mode is replaced, mode and all.
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	in.Version = 0
	before := time.Now().UTC().Truncate(time.Second)
	if err := Save(dir, in); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode %#o, want 0600", fi.Mode().Perm())
	}
	out, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if out.Version != Version {
		t.Errorf("saved version %d, want %d", out.Version, Version)
	}
	if out.UpdatedAt.Before(before) || out.UpdatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("updated_at %v is not now", out.UpdatedAt)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip changed the state:\n got %+v\nwant %+v", out, in)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only state.json", len(entries))
	}
}

func TestLoadMissing(t *testing.T) {
	t.Parallel()
	_, err := Load(t.TempDir())
	if !errors.Is(err, ErrNotExist) {
		t.Errorf("err = %v, want ErrNotExist", err)
	}
	_, err = Load(filepath.Join(t.TempDir(), "no", "such", "dir"))
	if !errors.Is(err, ErrNotExist) {
		t.Errorf("missing dir: err = %v, want ErrNotExist", err)
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := WriteToken(dir, "hvs.secret-token"); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(dir, TokenName))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("token mode %#o, want 0600", fi.Mode().Perm())
		}
		got, err := ReadToken(dir)
		if err != nil || got != "hvs.secret-token" {
			t.Errorf("ReadToken = %q, %v", got, err)
		}
	})
	t.Run("trims a trailing newline", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, TokenName), []byte("hvs.abc\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadToken(dir); err != nil || got != "hvs.abc" {
			t.Errorf("ReadToken = %q, %v", got, err)
		}
	})
	for name, content := range map[string]string{"empty": "", "blank": " \n\t\n"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, TokenName), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadToken(dir); err == nil || !strings.Contains(err.Error(), "is empty") {
				t.Errorf("err = %v, want one saying the file is empty", err)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		if _, err := ReadToken(t.TempDir()); err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want not-exist", err)
		}
	})
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]os.FileMode{"0440": 0o440, "440": 0o440, "0600": 0o600, "0777": 0o777, "0": 0, "00644": 0o644} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %#o, %v; want %#o", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "0o440", "0x1ff", "999", "0888", "1777", "4755", "-1", "+440", "0440 ", " 0440", "0440x", "rw-r-----"} {
		if m, err := ParseMode(in); err == nil {
			t.Errorf("ParseMode(%q) = %#o, want an error", in, m)
		} else if !strings.Contains(err.Error(), "octal") {
			t.Errorf("ParseMode(%q) error %q does not say what is wanted", in, err)
		}
	}
}

func TestLock(t *testing.T) {
	t.Parallel()
	t.Run("excludes a second locker until ctx ends", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		unlock, err := Lock(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		unlock2, err := Lock(ctx, dir)
		if err == nil {
			unlock2()
			t.Fatal("a second locker got the lock")
		}
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "held by another podlease process") {
			t.Errorf("err = %v, want a deadline error saying who holds it", err)
		}
		if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
			t.Errorf("gave up after %v, want about 200ms", d)
		}
	})
	t.Run("a waiter gets the lock when it is released", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		unlock, err := Lock(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(100 * time.Millisecond)
			unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		unlock2, err := Lock(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		unlock2()
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("waited %v for a lock released after 100ms", d)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		unlock, err := Lock(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Lock(ctx, dir); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("relock after unlock", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		for range 3 {
			unlock, err := Lock(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			unlock()
		}
	})
	t.Run("missing dir", func(t *testing.T) {
		t.Parallel()
		if _, err := Lock(context.Background(), filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "lock state dir") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestUpgradeV1 reads a version 1 state, which held a SHA-256 of each
// rendered file: the hash settles which file holds which credential one
// last time (a file that still matches gets its inode; one a pending
// rotation replaced gets 0, so the pending credential is adopted), and is
// gone from what Save writes.
func TestUpgradeV1(t *testing.T) {
	t.Parallel()
	stateDir, secretsDir := t.TempDir(), t.TempDir()
	write := func(name, content string) (file, sum string) {
		file = filepath.Join(secretsDir, name)
		if err := os.WriteFile(file, []byte(content), 0o440); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256([]byte(content))
		return file, hex.EncodeToString(h[:])
	}
	dbFile, dbSum := write("db", "PIN=\"1234\"\n")
	rotFile, rotSum := write("rot", "old credential\n")
	write("rot", "new credential, written by the rotation left pending\n")
	v1 := fmt.Sprintf(`{"version":1,"vault_addr":"http://127.0.0.1:8200","auth":{"method":"kubernetes","mount":"kubernetes"},"token":{"accessor":"a","ttl":60,"renewable":true,"issued_at":"2025-01-01T00:00:00Z","expires_at":"2025-01-01T00:01:00Z","owned":true},
"secrets_dir":%q,
"secrets":[{"name":"db","path":"kv/db","kind":"kv","lease_duration":0,"renewable":false,"issued_at":"2025-01-01T00:00:00Z","file":%q,"file_mode":"0440","format":"env","checksum":%q},
{"name":"rot","path":"database/creds/r","kind":"leased","lease_id":"database/creds/r/OLD","lease_duration":60,"renewable":true,"issued_at":"2025-01-01T00:00:00Z","file":%q,"file_mode":"0440","format":"json","checksum":%q}],
"pending":[{"name":"rot","path":"database/creds/r","kind":"leased","lease_id":"database/creds/r/NEW","lease_duration":60,"renewable":true,"issued_at":"2025-01-01T00:00:00Z","file":%q,"file_mode":"0440","format":"json","checksum":"ffff"}],
"updated_at":"2025-01-01T00:00:00Z"}`, secretsDir, dbFile, dbSum, rotFile, rotSum, rotFile)
	if err := os.WriteFile(filepath.Join(stateDir, FileName), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := Load(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Lookup("db").FileInode, Inode(dbFile); got != want || want == 0 {
		t.Errorf("db: file_inode %d, want the file's %d: the file still holds what state names", got, want)
	}
	if got := st.Lookup("rot").FileInode; got != 0 {
		t.Errorf("rot: file_inode %d, want 0: the pending rotation replaced the file", got)
	}
	if len(st.Pending) != 1 || st.Pending[0].LeaseID != "database/creds/r/NEW" {
		t.Errorf("pending = %+v, want the new lease kept", st.Pending)
	}
	if err := Save(stateDir, st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(stateDir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"version": 2`) || strings.Contains(string(b), "checksum") || strings.Contains(string(b), dbSum) {
		t.Errorf("saved state still holds a version 1 checksum, or is not version 2:\n%s", b)
	}
}

// TestSaveSize: a template's text is kept as it is (<, > and & not
// escaped to six bytes each), and a state larger than the readers take is
// refused, leaving the file that was there.
func TestSaveSize(t *testing.T) {
	t.Parallel()
	st, err := Decode("fixture", fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st.Secrets[0].Template = strings.Repeat("<&>", 1<<20/3)
	if err := Save(dir, st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 1<<20+16<<10 {
		t.Errorf("state.json of a 1 MiB template of <&> is %d bytes", fi.Size())
	}
	if _, err := Load(dir); err != nil {
		t.Errorf("read back: %v", err)
	}
	big := *st
	big.Secrets = slices.Clone(st.Secrets)
	big.Secrets[0].Template = strings.Repeat("x", MaxFile)
	if err := Save(dir, &big); err == nil || !strings.Contains(err.Error(), "fewer or smaller templates") {
		t.Errorf("a state over %d bytes: %v; want it refused", MaxFile, err)
	}
	if after, err := os.Stat(filepath.Join(dir, FileName)); err != nil || after.Size() != fi.Size() {
		t.Errorf("the refused save changed state.json (%v)", err)
	}
}
