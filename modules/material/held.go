package material

import "github.com/caddyserver/caddy/v2"

// Held is a module's hold on a shared Reloadable: Acquire it in Provision,
// Release it in Cleanup. Modules embed it.
type Held[T any] struct {
	// Src is the shared source; nil before Acquire and after Release.
	Src *Reloadable[T] `json:"-"`
	key string
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

// Release gives the source back; safe when Acquire failed or never ran
// (Caddy calls Cleanup after a failed Provision too).
func (h *Held[T]) Release() {
	if h.Src != nil {
		Release(h.key)
		h.Src = nil
	}
}

// Key is the usage-pool key the source was acquired under.
func (h *Held[T]) Key() string { return h.key }
