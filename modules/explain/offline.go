package explain

import (
	"encoding/json"
	"fmt"

	"github.com/caddyserver/caddy/v2"
)

// Offline explains req against config (Caddy JSON) provisioned in this
// process as `caddy run` would, without starting it (files are read now,
// nothing listens); source names the config in the answer. No admin
// endpoint, and logs go to stderr at ERROR level only: the command's
// output stays readable and the config's log files untouched.
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
