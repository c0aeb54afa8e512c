package explain

import (
	"encoding/json"
	"fmt"

	"github.com/caddyserver/caddy/v2"
)

// Offline explains req against config (Caddy JSON), provisioned in this
// process as Caddy would, without starting it (caddy.ProvisionContext:
// files are read now, watchers start, nothing listens), so that explain
// runs on the very modules a `caddy run` of the same config would build;
// source names the config in the answer. The admin endpoint is not
// started, and the logs go to stderr at ERROR level: the command's output
// stays readable, and nothing is written to the config's log files.
func Offline(config []byte, req *Request, source string) (*Report, error) {
	var cfg caddy.Config
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	cfg.Admin = &caddy.AdminConfig{Disabled: true}
	cfg.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{
		"default": {BaseLog: caddy.BaseLog{Level: "ERROR"}},
	}}
	ctx, err := caddy.ProvisionContext(&cfg)
	if err != nil {
		return nil, fmt.Errorf("provisioning the config: %w", err)
	}
	return Explain(ctx, config, req, source)
}
