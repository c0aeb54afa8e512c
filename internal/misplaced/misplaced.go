// Package misplaced knows where the suite's directives and options
// belong, so that a parser that meets one in the wrong block can say where
// to put it instead of only "unknown option".
//
// Caddy's own parsers (the `tls` directive's `client_auth`, `handle`, a
// site block) report such a word themselves, and the suite cannot add to
// their errors; the suite's parsers (the peer directives and verifier,
// passthrough, the trust pool sources, terminate_tls, transport mtls)
// append Hint to theirs.
package misplaced

import "strings"

const (
	siteDirective  = "a site directive: put it in the site block, beside `tls`"
	clientAuthOpt  = "an option of `client_auth`: put it in the site's `tls { client_auth { ... } }`"
	revocationOpt  = "an option of `verifier peer`: put it in `verifier peer { ... }` inside `tls { client_auth { ... } }` (revocation is checked at the handshake)"
	upstreamTLSOpt = "what Caddy presents to or expects from a backend: put it in `reverse_proxy { transport mtls { ... } }`, or in a passthrough route's `tls { ... }`"
)

// homes says where each word belongs.
var homes = map[string]string{
	"peer_authorize":        siteDirective + " (it decides per request, on the identity the handshake verified)",
	"peer_identity":         siteDirective,
	"forward_peer_identity": siteDirective + " and `reverse_proxy`",
	"passthrough":           "a site directive (put it in a site block, beside `tls`) or a global option (`passthrough <address> { ... }` for a port with no site)",
	"client_auth":           "an option of the site's `tls { ... }` block, where Caddy terminates TLS and asks clients for a certificate (a passed-through connection is not decrypted; a backend's certificate is checked with `trust_pool`)",
	"verifier":              clientAuthOpt,
	"mode":                  clientAuthOpt + ", beside `verifier` (`verifier live_trust` needs none)",
	"trust_pool":            "an option of `client_auth` (the CAs of clients; `verifier live_trust <source>` follows reloads), of `transport mtls` or of a passthrough route's `tls { ... }` (the CAs of backends)",
	"client_identity":       upstreamTLSOpt,
	"upstream_identity":     upstreamTLSOpt,
}

// Is returns, for a word a parser does not take, "<word> is <where it
// belongs>", or "" when the suite knows no other home for it.
func Is(word string) string {
	home, ok := homes[word]
	if !ok && (strings.HasPrefix(word, "crl") || strings.HasPrefix(word, "ocsp")) {
		home, ok = revocationOpt, true
	}
	if !ok {
		return ""
	}
	return word + " is " + home
}

// Hint is Is as the end of an "unknown option" error: "; <word> is
// <where it belongs>", or "".
func Hint(word string) string {
	if is := Is(word); is != "" {
		return "; " + is
	}
	return ""
}
