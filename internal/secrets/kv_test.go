package secrets

import "testing"

func TestKV2Paths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path, mount, ns, data, list string
	}{
		{"secret/app", "secret/", "", "secret/data/app", "secret/metadata/app"},
		{"secret", "secret/", "", "secret/data", "secret/metadata"},
		{"secret/data/app", "secret/", "", "secret/data/app", "secret/metadata/data/app"},
		{"secret/metadata/app", "secret/", "", "secret/metadata/app", "secret/metadata/app"},
		{"kv/team/app/db", "kv/team/", "", "kv/team/data/app/db", "kv/team/metadata/app/db"},
		{"team/app", "ns1/team/", "ns1", "team/data/app", "ns1/team/metadata/team/app"},
	} {
		if got := kv2DataPath(tc.path, tc.mount, tc.ns); got != tc.data {
			t.Errorf("kv2DataPath(%q, %q, %q) = %q, want %q", tc.path, tc.mount, tc.ns, got, tc.data)
		}
		if tc.ns == "" {
			if got := kv2ListPath(tc.path, tc.mount); got != tc.list {
				t.Errorf("kv2ListPath(%q, %q) = %q, want %q", tc.path, tc.mount, got, tc.list)
			}
		}
	}
}

func TestExplicitPaths(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]bool{
		"secret/data/app": true, "secret/metadata/app": true, "database/creds/app": true,
		"database/static-creds/app": true, "secret/app": false, "secret": false, "kv/team/data/x": false,
	} {
		if got := explicit(p); got != want {
			t.Errorf("explicit(%q) = %v, want %v", p, got, want)
		}
	}
}
