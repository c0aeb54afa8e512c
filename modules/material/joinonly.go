package material

import (
	"context"

	"github.com/caddyserver/caddy/v2"
)

type joinOnlyKey struct{}

// JoinOnly marks ctx as one that provisions modules to look at them, not
// to run them (`caddy trustline explain` provisioning a terminate_tls
// handler beside the running config): Acquire in it joins a source
// already held as it is, without reading it again. Without the mark a
// source with no files (a SPIFFE bundle endpoint, storage) is read again
// for every new config's context (see refreshFor), which for explain
// would be a fetch and would change the version the running config
// uses. A source no config holds is still loaded, as for any config.
func JoinOnly(ctx caddy.Context) caddy.Context {
	ctx.Context = context.WithValue(ctx.Context, joinOnlyKey{}, true)
	return ctx
}

func joinOnly(ctx caddy.Context) bool {
	v, _ := ctx.Value(joinOnlyKey{}).(bool)
	return v
}
