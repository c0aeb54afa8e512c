// Package testcaddy provisions configs with Caddy's own code in tests, as
// `caddy validate`, `caddy adapt --validate` and an admin /load do, for
// the load-time checks that only the whole config shows.
package testcaddy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// Validate provisions the JSON config cfg and cleans it up, with Caddy's
// storage in a temporary directory and the default log in a file (at
// DEBUG). It returns the provisioning error and the log lines at WARN,
// decoded.
func Validate(t testing.TB, cfg []byte) (warnings []map[string]any, err error) {
	t.Helper()
	var c caddy.Config
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatalf("config: %v\n%s", err, cfg)
	}
	dir := t.TempDir()
	logFile := filepath.Join(dir, "log")
	c.StorageRaw = caddyconfig.JSON(map[string]string{"module": "file_system", "root": filepath.Join(dir, "storage")}, nil)
	if c.Logging == nil {
		c.Logging = new(caddy.Logging)
	}
	if c.Logging.Logs == nil {
		c.Logging.Logs = map[string]*caddy.CustomLog{}
	}
	c.Logging.Logs["default"] = &caddy.CustomLog{BaseLog: caddy.BaseLog{
		WriterRaw:  caddyconfig.JSON(map[string]string{"output": "file", "filename": logFile}, nil),
		EncoderRaw: caddyconfig.JSON(map[string]string{"format": "json"}, nil),
		Level:      "DEBUG",
	}}
	err = caddy.Validate(&c)
	raw, _ := os.ReadFile(logFile)
	for _, line := range strings.Split(string(raw), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["level"] == "warn" {
			warnings = append(warnings, e)
		}
	}
	return warnings, err
}
