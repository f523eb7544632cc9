package secrets

import (
	"context"
	"log/slog"
	"path"
	"sort"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/internal/render"
	"github.com/podlease/podlease/internal/vaultclient"
)

// KV v2 short paths, as consul-template reads them: on a KV v2 mount,
// secret/app is read at secret/data/app and listed at secret/metadata/app.
// Whether a mount is KV v2 is asked of sys/internal/ui/mounts/PATH, which
// any token with a capability under the mount may read (no policy line of
// its own).

// explicit reports a path whose shape already says what to read: its
// second segment is one of KV v2's data or metadata, or a credentials
// endpoint. Such paths are read as given, so the common ones
// (secret/data/app, database/creds/app) cost no extra request. The
// shape of a credentials endpoint can also be a KV v2 folder
// (secret/creds/app): Fetch asks about the mount only when such a read
// finds nothing.
func explicit(p string) bool {
	seg := secondSegment(p)
	return seg == "data" || seg == "metadata" || credsShaped(p)
}

// credsShaped reports a path whose second segment is creds or
// static-creds, as the database, AWS, RabbitMQ and other engines name
// their credential endpoints.
func credsShaped(p string) bool {
	seg := secondSegment(p)
	return seg == "creds" || seg == "static-creds"
}

func secondSegment(p string) string {
	_, rest, ok := strings.Cut(p, "/")
	if !ok {
		return ""
	}
	seg, _, _ := strings.Cut(rest, "/")
	return seg
}

// kvMount asks Vault which mount holds p and whether it is KV v2. A failed
// question counts as "not KV v2", as in consul-template: the read then
// fails on its own with a clear error if that was wrong.
func kvMount(ctx context.Context, c *api.Client, log *slog.Logger, p string) (mount string, v2 bool) {
	var resp *api.Secret
	err := vaultclient.Retry(ctx, log, "look up the mount of "+p, func(ctx context.Context) error {
		var err error
		resp, err = c.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+p)
		return err
	})
	if err != nil || resp == nil {
		if err != nil {
			log.Warn("could not tell whether the path is on a KV v2 mount; reading it as given", "path", p, "err", vaultclient.Cause(err))
		}
		return "", false
	}
	mount, _ = resp.Data["path"].(string)
	typ, _ := resp.Data["type"].(string)
	opts, _ := resp.Data["options"].(map[string]any)
	version, _ := opts["version"].(string)
	return mount, typ == "kv" && version == "2"
}

// resolve returns the path to read for p: on a KV v2 mount a short path
// gains its data/ segment; anything else is read as given.
func resolve(ctx context.Context, c *api.Client, log *slog.Logger, p string) string {
	if explicit(p) {
		return p
	}
	mount, v2 := kvMount(ctx, c, log, p)
	if !v2 {
		return p
	}
	return kv2DataPath(p, mount, c.Namespace())
}

// Fetch reads the secret at p as given with --secret: resolve, then Read.
// A credentials-shaped path that holds nothing may be a KV v2 secret in a
// folder named creds (Vault answers "Invalid path for a versioned K/V
// secrets engine"): Fetch then asks which mount holds it and, on a KV v2
// mount, reads it with data/. f.Path is the path that was read; the
// error of a read that finds nothing names the path as given.
func Fetch(ctx context.Context, c *api.Client, log *slog.Logger, p string) (*Fetched, error) {
	rp := resolve(ctx, c, log, p)
	f, err := Read(ctx, c, log, rp)
	if err == nil || !notFound(err) || !credsShaped(p) {
		return f, err
	}
	mount, v2 := kvMount(ctx, c, log, p)
	if !v2 {
		return nil, err
	}
	dp := kv2DataPath(p, mount, c.Namespace())
	if dp == p {
		return nil, err
	}
	log.Info("the path is on a KV v2 mount: reading it with data/", "path", p, "read_path", dp)
	return Read(ctx, c, log, dp)
}

// kv2DataPath inserts data/ after the mount, leaving paths that already
// name data/, metadata/ or subkeys/ alone. The mount Vault reports may
// carry the client's namespace, which the path does not.
func kv2DataPath(p, mount, namespace string) string {
	if p == mount || p == strings.TrimSuffix(mount, "/") {
		return path.Join(mount, "data")
	}
	if !strings.HasSuffix(namespace, "/") {
		namespace += "/"
	}
	m := mount
	if strings.Count(mount, "/") > 1 && len(mount) > len(namespace) {
		m = strings.TrimPrefix(mount, namespace)
	}
	rest := strings.TrimPrefix(p, m)
	if strings.HasPrefix(rest, "data/") || strings.HasPrefix(rest, "metadata/") || strings.HasPrefix(rest, "subkeys/") {
		return p
	}
	return path.Join(m, "data", rest)
}

// kv2ListPath inserts metadata/ after the mount, where KV v2 lists keys.
func kv2ListPath(p, mount string) string {
	mount = strings.TrimSuffix(mount, "/")
	if strings.HasPrefix(p, path.Join(mount, "metadata")) {
		return p
	}
	return path.Join(mount, "metadata", strings.TrimPrefix(p, mount))
}

// Lister answers {{ secrets "PATH" }}: the sorted keys Vault lists under
// PATH (names only, never values; a folder ends in "/"), none if there is
// nothing there. It needs the list capability on PATH.
func Lister(ctx context.Context, c *api.Client, log *slog.Logger) render.List {
	return func(p string) ([]string, error) {
		lp := p
		if mount, v2 := kvMount(ctx, c, log, p); v2 {
			lp = kv2ListPath(p, mount)
		}
		var resp *api.Secret
		err := vaultclient.Retry(ctx, log, "list "+lp, func(ctx context.Context) error {
			var err error
			resp, err = c.Logical().ListWithContext(ctx, lp)
			return err
		})
		if err != nil {
			return nil, &ReadError{Path: lp, Err: err}
		}
		if resp == nil || resp.Data == nil {
			return nil, nil
		}
		raw, _ := resp.Data["keys"].([]any)
		keys := make([]string, 0, len(raw))
		for _, k := range raw {
			if s, ok := k.(string); ok {
				keys = append(keys, s)
			}
		}
		sort.Strings(keys)
		return keys, nil
	}
}
