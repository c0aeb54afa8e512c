// Package trustline is the whole suite: importing it (as xcaddy's --with
// does) registers every trustline module with Caddy, together with the
// caddy-l4 sub-packages the suite builds on. It imports each package that
// registers a module or a Caddyfile directive by name, not through another
// package's imports, so that moving a registration cannot drop a module.
package trustline

import (
	// caddy-l4: only its sub-packages; its root package does not build
	// against caddy v2.11.9 (its QUIC matcher).
	_ "github.com/mholt/caddy-l4/layer4"
	_ "github.com/mholt/caddy-l4/modules/l4echo"
	_ "github.com/mholt/caddy-l4/modules/l4http"
	_ "github.com/mholt/caddy-l4/modules/l4proxy"
	_ "github.com/mholt/caddy-l4/modules/l4proxyprotocol"
	_ "github.com/mholt/caddy-l4/modules/l4subroute"
	_ "github.com/mholt/caddy-l4/modules/l4tls"

	_ "github.com/trustline/trustline/modules/cluster"
	_ "github.com/trustline/trustline/modules/explain"
	_ "github.com/trustline/trustline/modules/keystore"
	_ "github.com/trustline/trustline/modules/passthrough"
	_ "github.com/trustline/trustline/modules/peer"
	_ "github.com/trustline/trustline/modules/spiffeworkload"
	_ "github.com/trustline/trustline/modules/storage/redis"
	_ "github.com/trustline/trustline/modules/topology"
	_ "github.com/trustline/trustline/modules/truststore"
	_ "github.com/trustline/trustline/modules/upstream"
)
