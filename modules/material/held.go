package material

import "github.com/caddyserver/caddy/v2"

// Held is a module's hold on a shared Reloadable: Acquire it in Provision,
// Release it in Cleanup. Modules embed it.
//
// A config's handshakes and requests can outlive its Cleanup: on an admin
// reload Caddy stops the old servers without waiting for their in-flight
// connections, then cleans the old config up. So Release only gives the
// usage-pool reference back (the last one stops the watcher); Src stays,
// and a reader of a released (or stopped) source still gets its last good
// version, never nil.
type Held[T any] struct {
	// Src is the shared source: set once, by a successful Acquire in
	// Provision, and never changed after, so readers need no
	// synchronization. Nil only when Acquire failed or never ran.
	Src *Reloadable[T] `json:"-"`
	key string
	// released: Release ran (Cleanup runs once per module, never at the
	// same time as Provision).
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
// ran (Caddy calls Cleanup after a failed Provision too). Src keeps
// answering with its last good version.
func (h *Held[T]) Release() {
	if h.Src != nil && !h.released {
		h.released = true
		Release(h.key)
	}
}

// Cleanup releases the source: it implements caddy.CleanerUpper for a
// module that holds nothing else to stop (stops watching when no other
// config uses the same source). A module with more to stop has its own
// Cleanup, which calls Release.
func (h *Held[T]) Cleanup() error {
	h.Release()
	return nil
}

// Key is the usage-pool key the source was acquired under.
func (h *Held[T]) Key() string { return h.key }
