package state

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzStateDecode: Decode never panics; what it accepts has the current
// version and a Vault address, and survives an encode/decode round trip
// unchanged.
func FuzzStateDecode(f *testing.F) {
	good := fixture(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"version":1,"vault_addr":"http://127.0.0.1:8200"}`))
	f.Add([]byte(`{"version":1,"vault_addr":"x","secrets":[{"name":"db","issued_at":"2025-01-02T03:04:05+01:00"}]}`))
	f.Add([]byte(`{"version":2,"vault_addr":"x"}`))
	f.Add([]byte(`{"version":1,"vault_addr":"x","extra":1}`))
	f.Add([]byte(`{"version":1,"vault_addr":"x","revoked_at":null,"retiring":[]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode("state.json", b)
		if err != nil {
			if s != nil {
				t.Fatal("a state and an error")
			}
			if !strings.HasPrefix(err.Error(), "state.json ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if s.Version != Version || s.VaultAddr == "" {
			t.Fatalf("accepted version %d, vault_addr %q", s.Version, s.VaultAddr)
		}
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("cannot encode what was decoded: %v", err)
		}
		s2, err := Decode("state.json", enc)
		if err != nil {
			t.Fatalf("cannot decode what was encoded: %v\n%s", err, enc)
		}
		enc2, err := json.Marshal(s2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the state:\n%s\n%s", enc, enc2)
		}
	})
}
