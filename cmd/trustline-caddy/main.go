// Command trustline-caddy is Caddy with the trustline suite built in. It is
// what `xcaddy build --with github.com/trustline/trustline` produces; the
// integration bench builds it directly for fast iteration.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/trustline/trustline"
)

func main() {
	caddycmd.Main()
}
