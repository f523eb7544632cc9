package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/podlease/podlease/e2e/testbed"
)

// auditLog reads the file audit device the bench enables on the dev
// server: every request a contender makes is one "request" entry. Values
// in it are HMACed by Vault; only accessors are kept in clear, so requests
// can be attributed to a contender's token.
type auditLog struct {
	path   string
	offset int64
}

// auditEntry is the part of a Vault audit entry the bench reads.
type auditEntry struct {
	Type string    `json:"type"` // "request" or "response"
	Time time.Time `json:"time"`
	Auth struct {
		Accessor    string   `json:"accessor"`
		DisplayName string   `json:"display_name"`
		Policies    []string `json:"policies"`
	} `json:"auth"`
	Request struct {
		ID        string `json:"id"`
		Operation string `json:"operation"`
		Path      string `json:"path"`
	} `json:"request"`
}

// key names a request the way the report prints it.
func (e auditEntry) key() string { return e.Request.Operation + " " + e.Request.Path }

// root reports whether the entry is the bench's own (root token) request.
func (e auditEntry) root() bool {
	return e.Auth.DisplayName == "root" || slices.Contains(e.Auth.Policies, "root")
}

func enableAudit(ctx context.Context, bed *testbed.Bed) (*auditLog, error) {
	path := filepath.Join(bed.Dir, "audit.log")
	err := bed.Root().Sys().EnableAuditWithOptionsWithContext(ctx, "bench", &api.EnableAuditOptions{
		Type: "file",
		Options: map[string]string{
			"file_path": path,
			// Accessors in clear to attribute requests; secrets stay HMACed.
			"hmac_accessor": "false",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("enable the file audit device: %w", err)
	}
	return &auditLog{path: path}, nil
}

// mark skips everything logged so far.
func (a *auditLog) mark() error {
	_, err := a.next()
	return err
}

// next returns the entries (requests and responses) logged since the last
// call, except the bench's own root-token requests.
func (a *auditLog) next() ([]auditEntry, error) {
	f, err := os.Open(a.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(a.offset, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	// Only whole lines; a line being written is read next time.
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		return nil, nil
	}
	a.offset += int64(end + 1)
	var out []auditEntry
	for _, line := range bytes.Split(b[:end], []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		var e auditEntry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("audit log %s: %w", a.path, err)
		}
		if !e.root() {
			out = append(out, e)
		}
	}
	return out, nil
}

// requestMix counts requests by "operation path", with lease ids and
// other per-pod parts of paths folded so runs compare.
type requestMix map[string]int

func mixOf(es []auditEntry) requestMix {
	m := requestMix{}
	for _, e := range es {
		if e.Type == "request" {
			m[foldPath(e.key())]++
		}
	}
	return m
}

// serverTime is the time Vault spent on the requests in es: for each
// request, from its request entry to its response entry.
func serverTime(es []auditEntry) time.Duration {
	began := map[string]time.Time{}
	var total time.Duration
	for _, e := range es {
		switch e.Type {
		case "request":
			began[e.Request.ID] = e.Time
		case "response":
			if t, ok := began[e.Request.ID]; ok {
				total += e.Time.Sub(t)
			}
		}
	}
	return total
}

func (m requestMix) total() int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// String is "N: op path ×k, ..." sorted by path.
func (m requestMix) String() string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("`%s` ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// foldPath shortens lease-specific paths (sys/leases/renew carries the
// lease id in the body, but sys/renew/<id> in the path).
func foldPath(k string) string {
	if i := strings.Index(k, "sys/renew/"); i >= 0 {
		return k[:i] + "sys/renew/…"
	}
	if i := strings.Index(k, "sys/leases/renew/"); i >= 0 {
		return k[:i] + "sys/leases/renew/…"
	}
	return k
}
