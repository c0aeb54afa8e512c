package caddyinternals

import (
	"bytes"
	"fmt"
	"io"
	_ "unsafe" // for go:linkname
)

// readConfig is Caddy's own reader of the running config, behind the
// admin API's GET /config/ (under the config lock). Caddy v2.11.9 exports
// no in-process way: readConfig, rawCfgJSON, Context.cfg (what
// caddy.ActiveContext() holds) and the admin handler are unexported, the
// apps' JSON is released once provisioned, and the expiry gauges run
// outside any admin request, with the admin endpoint possibly off.
// TestRunningConfig pins it.
//
//go:linkname readConfig github.com/caddyserver/caddy/v2.readConfig
func readConfig(path string, out io.Writer) error

// RunningConfig returns the JSON of the config this process runs ("null"
// when none is loaded), as GET /config/ does.
func RunningConfig() ([]byte, error) {
	var buf bytes.Buffer
	if err := readConfig("/config/", &buf); err != nil {
		return nil, fmt.Errorf("reading the running config: %w", err)
	}
	return buf.Bytes(), nil
}
