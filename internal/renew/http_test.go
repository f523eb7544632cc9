package renew

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/podlease/podlease/internal/state"
)

func TestRunServesHTTPAndExitsPromptly(t *testing.T) {
	t.Parallel()
	f, url := realFixture(t, "--revoke-on-exit")
	st := f.state()
	code, body := httpGet(url + "/metrics")
	if code != 200 || !regexp.MustCompile(`(?m)^podlease_secret_expiry_timestamp_seconds\{secret="db"\} \d{10}`).MatchString(body) {
		t.Errorf("/metrics over HTTP = %d, lacking the db expiry:\n%s", code, body)
	}
	if code, body := httpGet(url + "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}

	f.exitsPromptly()
	if f.v.alive(st.Secrets[0].LeaseID) || f.v.tokenAlive(st.Token.Accessor) {
		t.Error("--revoke-on-exit left the lease or the token alive")
	}
	if _, err := os.Stat(filepath.Join(f.secretsDir, "db")); !os.IsNotExist(err) {
		t.Errorf("--revoke-on-exit left the secret file: %v", err)
	}
	if after, err := state.Load(f.stateDir); err != nil || after.RevokedAt == nil {
		t.Errorf("state.json not marked revoked (%v)", err)
	}
	if code, _ := httpGet(url + "/healthz"); code != 0 {
		t.Error("the HTTP server still answers after exit")
	}
}
