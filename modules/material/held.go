package material

import (
	"context"

	"github.com/caddyserver/caddy/v2"
)

// Held is a module's hold on a shared Reloadable: Acquire it in Provision,
// Release it in Cleanup; modules embed it. Release only gives the
// usage-pool reference back: a config's handshakes can outlive its
// Cleanup, so Src stays and still answers with its last good version.
type Held[T any] struct {
	// Src is the shared source, set by a successful Acquire and never
	// changed after. Nil only when Acquire failed or never ran.
	Src      *Reloadable[T] `json:"-"`
	key      string
	released bool
}

// Acquire loads (or joins) the source described by spec; see the package
// func Acquire.
func (h *Held[T]) Acquire(ctx caddy.Context, spec Spec[T]) error {
	src, err := Acquire(ctx, spec)
	if err != nil {
		return err
	}
	h.Src, h.key = src, spec.Key
	return nil
}

// Release gives the source back, once; safe when Acquire failed or never
// ran (Caddy calls Cleanup after a failed Provision too).
func (h *Held[T]) Release() {
	if h.Src != nil && !h.released {
		h.released = true
		Release(h.key)
	}
}

// Cleanup releases the source: it implements caddy.CleanerUpper for a
// module with nothing else to stop.
func (h *Held[T]) Cleanup() error {
	h.Release()
	return nil
}

// Key is the usage-pool key the source was acquired under.
func (h *Held[T]) Key() string { return h.key }

type joinOnlyKey struct{}

// JoinOnly marks ctx as one that provisions modules to look at them, not
// to run them (`caddy trustline explain` beside the running config):
// Acquire in it joins a source already held as it is, without reading it
// again (for a source with no files that would be a fetch, changing the
// version the running config uses). A source no config holds is still
// loaded.
func JoinOnly(ctx caddy.Context) caddy.Context {
	ctx.Context = context.WithValue(ctx.Context, joinOnlyKey{}, true)
	return ctx
}
