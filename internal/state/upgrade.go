package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Inode returns the inode of the file at path, or 0 if it cannot be
// stat'ed. A symlink is not followed.
func Inode(path string) uint64 {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// upgradeV1 turns version 1 state into version 2. Version 1 kept a SHA-256
// of each rendered file ("checksum"); version 2 keeps the file's inode
// instead. The hash is used one last time, here: a secret whose file still
// matches it gets the file's inode, so that a rotation a version 1
// vault-renew left pending is settled as before (a file that holds the
// pending credential no longer matches, gets inode 0, and the pending
// credential is adopted). Then the hash is dropped.
func upgradeV1(b []byte) ([]byte, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	var secretsDir string
	_ = json.Unmarshal(raw["secrets_dir"], &secretsDir)
	for _, list := range []string{"secrets", "pending"} {
		if raw[list] == nil {
			continue
		}
		var entries []map[string]json.RawMessage
		if err := json.Unmarshal(raw[list], &entries); err != nil {
			return nil, err
		}
		for _, e := range entries {
			var sum, file, name string
			_ = json.Unmarshal(e["checksum"], &sum)
			_ = json.Unmarshal(e["file"], &file)
			_ = json.Unmarshal(e["name"], &name)
			delete(e, "checksum")
			// Only a file where Decode accepts it: NAME in secrets_dir.
			inDir := secretsDir != "" && name != "" && !strings.ContainsAny(name, "/\x00") && filepath.Clean(file) == filepath.Join(secretsDir, name)
			if list == "secrets" && inDir && sum != "" && fileHash(file) == sum {
				e["file_inode"], _ = json.Marshal(Inode(file))
			}
		}
		var err error
		if raw[list], err = json.Marshal(entries); err != nil {
			return nil, err
		}
	}
	raw["version"] = json.RawMessage("2")
	var out bytes.Buffer
	err := json.NewEncoder(&out).Encode(raw)
	return out.Bytes(), err
}

// fileHash is the version 1 checksum of the file at path, or "".
func fileHash(path string) string {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
