package discovery

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the static-auth-secret password is HMAC-SHA1
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/pion/turn/v5"
)

// staticAuthKey is the turnauth.KeyFunc of the static-auth-secret scheme
// (coturn's "TURN REST API"): the username is "expiry:name", its password
// base64(HMAC-SHA1(secret, username)). An expired or unparsable username
// is no such user, so internal/turnauth answers it 401, not pion's 400.
func staticAuthKey(secret string, now func() time.Time) func(username, realm string) ([]byte, bool) {
	return func(username, realm string) ([]byte, bool) {
		exp, _, _ := strings.Cut(username, ":")
		t, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || t < now().Unix() {
			return nil, false
		}
		pw := hmac.New(sha1.New, []byte(secret))
		pw.Write([]byte(username))
		password := base64.StdEncoding.EncodeToString(pw.Sum(nil))
		return turn.GenerateAuthKey(username, realm, password), true
	}
}
