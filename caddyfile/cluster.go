package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/trustline/trustline/modules/cluster"
)

// The trustline_cluster global option configures the app that coordinates
// the pki CAs of the nodes sharing Caddy's storage; its syntax is
// documented on cluster.App.UnmarshalCaddyfile.
func init() {
	httpcaddyfile.RegisterGlobalOption("trustline_cluster", parseCluster)
}

func parseCluster(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("trustline_cluster: the global option is given twice (list several CAs in one block: ca <id>...)")
	}
	app := new(cluster.App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "trustline_cluster", Value: caddyconfig.JSON(app, nil)}, nil
}
