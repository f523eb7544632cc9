// Command floorhttp is the floor program (cmd/bench/floor) without the
// Vault client library: it logs in with kubernetes auth and reads one
// secret with net/http and encoding/json alone, writes the secret's data
// to a file, and with -serve ADDR stays up answering /readyz, holding its
// HTTP client. Beside floor it shows what the Vault client library itself
// costs a Go sidecar in resident memory.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/podlease/podlease/e2e/cmd/bench/floorkit"
)

func main() { floorkit.Main("floorhttp", run) }

func run(ctx context.Context, f floorkit.Flags) error {
	jwt, err := os.ReadFile(f.JWTFile)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 30 * time.Second}
	body, _ := json.Marshal(map[string]string{"role": f.Role, "jwt": strings.TrimSpace(string(jwt))})
	var login struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := call(ctx, c, http.MethodPost, f.Addr+"/v1/auth/kubernetes/login", "", body, &login); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	if login.Auth.ClientToken == "" {
		return errors.New("log in: no token in the answer")
	}
	var secret struct {
		Data json.RawMessage `json:"data"`
	}
	if err := call(ctx, c, http.MethodGet, f.Addr+"/v1/"+f.Path, login.Auth.ClientToken, nil, &secret); err != nil {
		return fmt.Errorf("read %s: %w", f.Path, err)
	}
	return floorkit.Finish(f, secret.Data, func() bool { return c.Timeout > 0 })
}

// call sends one Vault request and decodes its JSON answer into v.
func call(ctx context.Context, c *http.Client, method, url, token string, body []byte, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return json.Unmarshal(b, v)
}
