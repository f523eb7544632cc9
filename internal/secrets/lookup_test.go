package secrets

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/state"
)

func TestLookup(t *testing.T) {
	t.Parallel()
	kv := &Fetched{Kind: state.KindKV, Resp: &api.Secret{Data: map[string]any{"host": "db"}}}
	leased := &Fetched{Kind: state.KindLeased, Resp: &api.Secret{LeaseID: "l1"}}
	secs := []state.Secret{
		{Name: "app", Path: "secret/data/app", ReadPath: "kv/data/app", Kind: state.KindKV},
		{Name: "db", Path: "database/creds/app", Kind: state.KindLeased},
		{Name: "broken", Path: "secret/data/broken", Kind: state.KindKV},
	}
	var reads []string
	fromState := LookupState(secs, func(p string) (*Fetched, error) {
		reads = append(reads, p)
		if p == "secret/data/broken" {
			return nil, errors.New("vault down")
		}
		return kv, nil
	})
	fromFetched := LookupFetched(map[string]*Fetched{"secret/data/app": kv, "database/creds/app": leased})
	for _, tc := range []struct {
		name, path, wantErr string
		state               bool
	}{
		{name: "kv given", path: "secret/data/app"},
		{name: "kv given, state", path: "secret/data/app", state: true},
		{name: "not given", path: "secret/data/other", wantErr: "is not a path given with --secret: add --secret NAME=secret/data/other"},
		{name: "not given, state", path: "secret/data/other", wantErr: "is not a path given with --secret", state: true},
		{name: "leased", path: "database/creds/app", wantErr: "is a leased secret of another --secret"},
		{name: "leased, state", path: "database/creds/app", wantErr: "is a leased secret of another --secret", state: true},
		{name: "read fails", path: "secret/data/broken", wantErr: "vault down", state: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := fromFetched
			if tc.state {
				lookup = fromState
			}
			got, err := lookup(tc.path)
			switch {
			case tc.wantErr == "" && (err != nil || got.Data["host"] != "db"):
				t.Errorf("lookup(%q) = %v, %v; want the KV data", tc.path, got, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("lookup(%q) error = %v; want %q", tc.path, err, tc.wantErr)
			}
		})
	}
	// The state's secret is read at its read path, once per lookup.
	if _, err := fromState("secret/data/app"); err != nil {
		t.Fatal(err)
	}
	if strings.Join(reads, " ") != "kv/data/app secret/data/broken" {
		t.Errorf("reads = %v; want kv/data/app once, then the broken one", reads)
	}
}
