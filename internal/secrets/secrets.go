// Package secrets reads a secret from Vault, works out what kind it is
// (leased, database static credential, or plain KV data), renders its
// file and records the lease in the state. vault-init uses it for the
// first issue, vault-renew for every rotation and re-read.
package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/atomicfile"
	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/state"
	"github.com/podlease/podlease/internal/vaultclient"
)

// Fetched is one read of a Vault path.
type Fetched struct {
	Path   string
	Kind   string
	Resp   *api.Secret
	Fields map[string]any // what the formats render: KV v2's inner data, else the response data
	// At is when the request Vault answered was sent. Vault starts a
	// lease's TTL while it handles the request, after this, so At plus
	// the TTL never names an expiry later than Vault's.
	At time.Time
}

// ReadError is a failed read of a Vault path; its message says what to
// check. Hint is added by the caller (for example the role whose policy
// should allow the path).
type ReadError struct {
	Path string
	Err  error
	Hint string
}

func (e *ReadError) Error() string {
	var s string
	switch code := vaultclient.StatusCode(e.Err); code {
	case 403:
		s = "permission denied reading " + e.Path
	case 404:
		s = "no secret at " + e.Path
		said := vaultSaid(e.Err)
		if said != "" {
			s += " (Vault: " + said + ")"
		}
		if strings.Contains(strings.ToLower(said), "versioned k/v") {
			s += ": the path is on a KV v2 mount: give it with data/ after the mount, e.g. secret/data/NAME for secret/NAME"
		} else {
			s += ": check the path (KV v2 reads look like secret/data/NAME, database credentials like database/creds/ROLE)"
		}
	default:
		// A read that kept failing until the deadline says so, with the
		// attempts, like a login that gave up.
		var g *vaultclient.GaveUpError
		if errors.As(e.Err, &g) {
			s = g.Error()
		} else {
			s = "read " + e.Path + ": " + vaultclient.Cause(e.Err)
		}
	}
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

func (e *ReadError) Unwrap() error { return e.Err }

// notFound reports a read that found no secret at its path.
func notFound(err error) bool { return vaultclient.StatusCode(err) == 404 }

// vaultSaid is what Vault said with a 404: its errors, or the warnings of
// an answer that held no secret.
func vaultSaid(err error) string {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return ""
	}
	return strings.Join(re.Errors, "; ")
}

// empty returns a 404 error for an answer that holds no secret, nil for
// one that does. Vault's client turns a 404 that carries warnings into a
// secret without data and no error: KV v2 answers a path without data/
// that way ("Invalid path for a versioned K/V secrets engine"). An answer
// with neither data nor a lease nor a token is nothing to write, so it
// counts as not found, as does a KV v2 version that is deleted or
// destroyed, whose answer keeps the metadata.
func empty(resp *api.Secret) error {
	switch {
	case resp == nil:
		return &api.ResponseError{StatusCode: 404}
	case deletedKV2(resp.Data):
		return &api.ResponseError{StatusCode: 404, Errors: append([]string{"the current version is deleted or destroyed"}, resp.Warnings...)}
	case resp.Data == nil && resp.LeaseID == "" && resp.Auth == nil:
		return &api.ResponseError{StatusCode: 404, Errors: resp.Warnings}
	}
	return nil
}

// Read reads path with c, retrying transient failures until ctx ends.
// Vault's warnings are logged (they are Vault's words about the request,
// never the secret's values).
func Read(ctx context.Context, c *api.Client, log *slog.Logger, path string) (*Fetched, error) {
	var resp *api.Secret
	var sent time.Time
	err := vaultclient.Retry(ctx, log, "read "+path, func(ctx context.Context) error {
		var err error
		sent = time.Now()
		resp, err = c.Logical().ReadWithContext(ctx, path)
		if err == nil {
			err = empty(resp)
		}
		return err
	})
	if err != nil {
		return nil, &ReadError{Path: path, Err: err}
	}
	if len(resp.Warnings) > 0 {
		log.Warn("Vault warned about a read", "path", path, "warnings", strings.Join(resp.Warnings, "; "))
	}
	return classify(path, resp, sent), nil
}

// classify tells what kind of secret resp is from what Vault returned,
// never from the path: a KV v2 secret may live under .../static-creds/...,
// and a static role may be mounted anywhere.
func classify(path string, resp *api.Secret, now time.Time) *Fetched {
	f := &Fetched{Path: path, Resp: resp, Fields: resp.Data, At: now}
	switch {
	case resp.LeaseID != "":
		f.Kind = state.KindLeased
	case isStatic(resp.Data):
		f.Kind = state.KindStatic
	default:
		f.Kind = state.KindKV
		if inner, ok := kv2Envelope(resp.Data); ok && inner != nil {
			f.Fields = inner
		}
	}
	if f.Fields == nil {
		f.Fields = map[string]any{}
	}
	return f
}

// isStatic reports a database static role's credential: Vault returns the
// time of the last rotation and the seconds until the next one beside the
// username and password.
func isStatic(data map[string]any) bool {
	_, rotated := data["last_vault_rotation"]
	_, ttl := data["ttl"].(json.Number)
	return rotated && ttl
}

// kv2Envelope returns the inner data of a KV v2 read, which Vault wraps as
// {"data": {...}, "metadata": {"version": N, ...}};
// ok is false for any other response. inner is nil for a deleted or
// destroyed version.
func kv2Envelope(data map[string]any) (inner map[string]any, ok bool) {
	if len(data) != 2 {
		return nil, false
	}
	meta, isMap := data["metadata"].(map[string]any)
	if !isMap {
		return nil, false
	}
	if _, v := meta["version"]; !v {
		return nil, false
	}
	raw, present := data["data"]
	if !present {
		return nil, false
	}
	if raw == nil {
		return nil, true
	}
	inner, isMap = raw.(map[string]any)
	return inner, isMap
}

// deletedKV2 reports a KV v2 read of a deleted or destroyed version:
// Vault answers 404 with the metadata and "data": null, which the client
// returns as a secret.
func deletedKV2(data map[string]any) bool {
	inner, ok := kv2Envelope(data)
	return ok && inner == nil
}

// Template returns what a template sees of f.
func (f *Fetched) Template() *render.Secret {
	return &render.Secret{Data: f.Resp.Data, LeaseID: f.Resp.LeaseID, LeaseDuration: f.Resp.LeaseDuration, Renewable: f.Resp.Renewable, Warnings: f.Resp.Warnings}
}

// TTL is how long this read stays valid: the lease duration for a leased
// secret, the time to the next rotation for a static credential, and 0
// (no expiry) for KV data.
func (f *Fetched) TTL() time.Duration {
	switch f.Kind {
	case state.KindLeased:
		return time.Duration(f.Resp.LeaseDuration) * time.Second
	case state.KindStatic:
		if n, ok := f.Resp.Data["ttl"].(json.Number); ok {
			if secs, err := n.Int64(); err == nil {
				return time.Duration(secs) * time.Second
			}
		}
	}
	return 0
}

// Render produces the file content of s from f. lookup resolves other
// paths a template names; nil allows only s's own path. list answers
// {{ secrets "PATH" }}; nil refuses it.
func Render(s *state.Secret, f *Fetched, lookup render.Lookup, list render.List) ([]byte, error) {
	if s.Template == "" {
		b, err := render.Format(s.Format, f.Fields)
		if err != nil {
			return nil, fmt.Errorf("render secret %q as %s: %w", s.Name, s.Format, err)
		}
		return b, nil
	}
	t, err := render.ParseTemplate(s.TemplateFile, s.Template)
	if err != nil {
		return nil, fmt.Errorf("template for secret %q: %w", s.Name, err)
	}
	b, err := t.Execute(f.Template(), func(path string) (*render.Secret, error) {
		if path == s.Path {
			return f.Template(), nil
		}
		if lookup == nil {
			return nil, render.NotGiven(path)
		}
		return lookup(path)
	}, list)
	if err != nil {
		return nil, fmt.Errorf("template %s for secret %q: %w", s.TemplateFile, s.Name, err)
	}
	return b, nil
}

// Record updates s with the lease of f. It keeps nothing of the content:
// WriteFile records which file holds it.
func Record(s *state.Secret, f *Fetched) {
	s.Kind = f.Kind
	s.LeaseID = f.Resp.LeaseID
	s.Renewable = f.Resp.Renewable
	ttl := f.TTL()
	s.LeaseDuration = int(ttl / time.Second)
	s.IssuedAt = f.At.UTC().Truncate(time.Second)
	s.ExpiresAt = time.Time{}
	if ttl > 0 {
		s.ExpiresAt = f.At.Add(ttl).UTC().Truncate(time.Second)
	}
}

// WriteFile writes content to s.File atomically with s's mode, and records
// the new file's inode in s.
func WriteFile(s *state.Secret, content []byte) error {
	mode, err := s.Mode()
	if err != nil {
		return fmt.Errorf("secret %q: %w", s.Name, err)
	}
	if err := atomicfile.Write(s.File, content, mode); err != nil {
		return err
	}
	s.FileInode = state.Inode(s.File)
	return nil
}
