package renew

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"maps"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/secrets"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// change is a fresh read of a group's path, rendered, not yet written:
// what fetch returns and commit writes.
type change struct {
	g        *group
	f        *secrets.Fetched
	contents [][]byte // one per g.secrets
	owner    string   // tokenID of the token that read it
	client   *api.Client
	quiet    bool // no notification: the app has nothing new
}

// fetch reads g's path with client and renders every file of g, retrying
// until fetchDeadline. A credential that cannot be rendered is revoked at
// once.
func (s *sidecar) fetch(ctx context.Context, client *api.Client, owner string, g *group, deadline time.Time) (*change, error) {
	fctx, cancel := s.finishing(ctx, fetchDeadline(time.Now(), deadline))
	defer cancel()
	// The caller logs how the read ended (see warnRetry), not each retry.
	fctx = vaultclient.WithQuietRetries(fctx)
	switch {
	case g.gone && g.retry.lostCap() > lostRetryCap:
		// Lost for long: the pace between reads is the fleet's (see
		// lostPatience), and a read retrying inside would undo it.
		fctx = vaultclient.WithOneAttempt(fctx)
	case g.gone:
		// The app has no working credential: retry inside the read as
		// often as between reads.
		fctx = vaultclient.WithMaxInterval(fctx, lostRetryCap)
	}
	f, err := secrets.Read(fctx, client, s.log, g.path)
	if err != nil {
		return nil, err
	}
	ch := &change{g: g, f: f, contents: make([][]byte, len(g.secrets)), owner: owner, client: client}
	lookup, list := s.lookup(fctx, client), secrets.Lister(fctx, client, s.log)
	for i, sec := range g.secrets {
		b, err := secrets.Render(sec, f, lookup, list)
		if err != nil {
			s.revokeLease(client, f.Resp.LeaseID, sec.Name)
			return nil, err
		}
		ch.contents[i] = b
	}
	return ch, nil
}

// lookup resolves {{ secret "PATH" }} in a template to another --secret
// without a lease, read afresh with client (secrets.Lookup's rule).
func (s *sidecar) lookup(ctx context.Context, client *api.Client) render.Lookup {
	return secrets.LookupState(s.secretsState(), func(path string) (*secrets.Fetched, error) {
		return secrets.Read(ctx, client, s.log, path)
	})
}

// fingerprint identifies the data of a secret without a lease, leaving out
// the ttl a static credential counts down, so that a re-read rewrites the
// file only when the data changed.
func fingerprint(f *secrets.Fetched) string {
	fields := f.Fields
	if f.Kind == state.KindStatic {
		fields = maps.Clone(fields)
		delete(fields, "ttl")
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return ""
	}
	// Kept in memory only, like the secret itself.
	sum := sha256.Sum256(b)
	return string(sum[:])
}
