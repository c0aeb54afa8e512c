package caddyinternals

import (
	"bytes"
	"fmt"
	"io"
	_ "unsafe" // for go:linkname
)

// readConfig is Caddy's own reader of the running config, the function
// behind the admin API's GET /config/: it encodes the config Caddy is
// running, under the lock that config changes take.
//
// Caddy v2.11.9 exports no way to read the running config in process:
// readConfig and rawCfgJSON are unexported, so are Context.cfg (which
// caddy.ActiveContext() would give) and the admin API's /config/ handler,
// the apps' JSON is released once they are provisioned, and admin.api
// modules get no config. The topology report's metrics collector runs
// outside any admin request, and the admin endpoint may be off, so it
// cannot ask the admin API over HTTP either. Hence this link to the
// unexported function; TestRunningConfig pins it.
//
//go:linkname readConfig github.com/caddyserver/caddy/v2.readConfig
func readConfig(path string, out io.Writer) error

// RunningConfig returns the JSON of the config this process runs ("null"
// when none is loaded), as GET /config/ of the admin API does. It waits
// for a config change in progress (Caddy's config lock).
func RunningConfig() ([]byte, error) {
	var buf bytes.Buffer
	if err := readConfig("/config/", &buf); err != nil {
		return nil, fmt.Errorf("reading the running config: %w", err)
	}
	return buf.Bytes(), nil
}
