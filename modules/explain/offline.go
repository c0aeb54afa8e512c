package explain

import (
	"encoding/json"
	"fmt"

	"github.com/caddyserver/caddy/v2"
)

// provision provisions a whole config in this process as Caddy would,
// without starting it (caddy.ProvisionContext: storage, then every app
// and its modules; files are read now, watchers start, nothing listens),
// so that explain runs on the very modules a `caddy run` of the same
// config would build. The admin endpoint is not started, and the logs go
// to stderr at ERROR level: the command's own output stays readable, and
// nothing is written to the config's log files.
func provision(config []byte) (caddy.Context, error) {
	var cfg caddy.Config
	if err := json.Unmarshal(config, &cfg); err != nil {
		return caddy.Context{}, fmt.Errorf("reading the config: %w", err)
	}
	cfg.Admin = &caddy.AdminConfig{Disabled: true}
	cfg.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{
		"default": {BaseLog: caddy.BaseLog{Level: "ERROR"}},
	}}
	ctx, err := caddy.ProvisionContext(&cfg)
	if err != nil {
		return ctx, fmt.Errorf("provisioning the config: %w", err)
	}
	return ctx, nil
}

// Offline explains req against config (Caddy JSON), provisioned in this
// process (see provision); source names the config in the answer.
func Offline(config []byte, req *Request, source string) (*Report, error) {
	ctx, err := provision(config)
	if err != nil {
		return nil, err
	}
	return Explain(ctx, config, req, source)
}
