package state

import (
	"strings"
	"testing"
)

// TestDecodeRefusesFilesOutsideSecretsDir: vault-renew writes and
// vault-revoke removes each secret's file, so a state.json whose secret
// file is not NAME inside secrets_dir is refused.
func TestDecodeRefusesFilesOutsideSecretsDir(t *testing.T) {
	t.Parallel()
	good := `{"version":1,"vault_addr":"http://v","secrets_dir":"/vault/secrets","secrets":[{"name":NAME,"file":FILE}]}`
	for _, tc := range []struct {
		name, secret, file string
		ok                 bool
	}{
		{"plain", `"db"`, `"/vault/secrets/db"`, true},
		{"double slash as vault-init writes it", `"db"`, `"/vault/secrets//db"`, true},
		{"elsewhere", `"db"`, `"/etc/passwd"`, false},
		{"other name", `"db"`, `"/vault/secrets/api"`, false},
		{"dot dot in the file", `"db"`, `"/vault/secrets/../db"`, false},
		{"dot dot as the name", `"../x"`, `"/vault/x"`, false},
		{"name with a slash", `"a/b"`, `"/vault/secrets/a/b"`, false},
		{"dot", `"."`, `"/vault/secrets"`, false},
		{"empty", `""`, `"/vault/secrets/"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := strings.NewReplacer("NAME", tc.secret, "FILE", tc.file).Replace(good)
			_, err := Decode("state.json", []byte(b))
			if (err == nil) != tc.ok {
				t.Fatalf("Decode: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "is not NAME in secrets_dir") {
				t.Errorf("error %q does not say what is wrong", err)
			}
		})
	}
}
