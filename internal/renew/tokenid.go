package renew

import (
	"crypto/sha256"
	"encoding/hex"
)

// tokenID names a token inside vault-renew: which token a lease belongs
// to, which old token a replaced lease goes with. It is the accessor; a
// batch token has none, so it is "batch-" and the start of the token's
// SHA-256, which tells two batch tokens apart and says nothing about the
// token (it is as random as the token, and far shorter). It is safe to
// log.
func tokenID(accessor, token string) string {
	if accessor != "" {
		return accessor
	}
	sum := sha256.Sum256([]byte(token))
	return "batch-" + hex.EncodeToString(sum[:6])
}
