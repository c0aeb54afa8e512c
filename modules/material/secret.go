package material

import (
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// ResolveSecret expands Caddy's global placeholders in a password setting:
// `{env.STORE_PASSWORD}` or `{file./run/secrets/store-pass}` (a trailing
// newline of the file is dropped). An unknown placeholder is an error, so a
// typo never becomes an empty password. The value is never logged.
func ResolveSecret(setting, value string) (string, error) {
	if !strings.Contains(value, "{") {
		return value, nil
	}
	out, err := caddy.NewReplacer().ReplaceOrErr(value, true, true)
	if err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	return strings.TrimRight(out, "\r\n"), nil
}
