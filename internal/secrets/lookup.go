package secrets

import (
	"fmt"

	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/state"
)

// Lookup resolves {{ secret "PATH" }} in a template, the one rule for
// vault-init and vault-renew: PATH must be the path of another --secret
// (given returns its kind, ok false when no --secret names PATH), and not a
// leased one, since each lease has its own file so that it is renewed and
// replaced on its own. read returns the other secret's data, at most once
// per path and Lookup.
func Lookup(given func(path string) (kind string, ok bool), read func(path string) (*Fetched, error)) render.Lookup {
	cache := map[string]*render.Secret{}
	return func(path string) (*render.Secret, error) {
		if r := cache[path]; r != nil {
			return r, nil
		}
		switch kind, ok := given(path); {
		case !ok:
			return nil, render.NotGiven(path)
		case kind == state.KindLeased:
			return nil, fmt.Errorf("%q is a leased secret of another --secret: give each lease its own file so it can be rotated on its own", path)
		}
		f, err := read(path)
		if err != nil {
			return nil, err
		}
		cache[path] = f.Template()
		return cache[path], nil
	}
}

// LookupFetched is Lookup over secrets just read, by --secret path, as
// vault-init renders its first files.
func LookupFetched(fetched map[string]*Fetched) render.Lookup {
	return Lookup(func(path string) (string, bool) {
		f := fetched[path]
		if f == nil {
			return "", false
		}
		return f.Kind, true
	}, func(path string) (*Fetched, error) { return fetched[path], nil })
}

// LookupState is Lookup over the secrets a state records, as vault-renew
// renders a file again: read gets the other secret afresh from the Vault
// path it was read at.
func LookupState(secs []state.Secret, read func(vaultPath string) (*Fetched, error)) render.Lookup {
	find := func(path string) *state.Secret {
		for i := range secs {
			if secs[i].Path == path {
				return &secs[i]
			}
		}
		return nil
	}
	return Lookup(func(path string) (string, bool) {
		if s := find(path); s != nil {
			return s.Kind, true
		}
		return "", false
	}, func(path string) (*Fetched, error) { return read(find(path).VaultPath()) })
}
