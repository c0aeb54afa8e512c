package revocation

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Unavailable reports whether err, a refusal of Verify, says that no
// usable CRL or OCSP answer was at hand (revocation unknown, under
// hard-fail), rather than that a certificate is revoked (or unknown to its
// OCSP responder).
func Unavailable(err error) bool {
	return errors.Is(err, errCRLUnavailable) || errors.Is(err, errOCSPUnavailable)
}

// crlGeneration counts the CRLs put in force anywhere in the process (a
// file's new version, a distribution point's new CRL): what a verdict
// reached with the CRLs then in force depends on. The listeners run after
// each.
var (
	crlGeneration atomic.Uint64
	listeners     sync.Map // *func() -> struct{}
)

// Version is a value that changes whenever a CRL is put in force, so that
// a connection admitted with the CRLs of before is checked again (see
// verify.Verified.DependOn). It is a counter read, cheap enough for every
// request.
func (r *Revocation) Version() any { return crlGeneration.Load() }

// OnCRLChange runs f (in its own goroutine) after each CRL put in force;
// cancel stops it.
func OnCRLChange(f func()) (cancel func()) {
	key := &f
	listeners.Store(key, struct{}{})
	return func() { listeners.Delete(key) }
}

// crlChanged bumps the generation and tells the listeners.
func crlChanged() {
	crlGeneration.Add(1)
	listeners.Range(func(k, _ any) bool {
		go (*k.(*func()))()
		return true
	})
}
