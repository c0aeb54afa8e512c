package revocation

import "errors"

// Unavailable reports whether err, a refusal of Verify, says that no
// usable CRL or OCSP answer was at hand (revocation unknown, under
// hard-fail), rather than that a certificate is revoked (or unknown to its
// OCSP responder).
func Unavailable(err error) bool {
	return errors.Is(err, errCRLUnavailable) || errors.Is(err, errOCSPUnavailable)
}
