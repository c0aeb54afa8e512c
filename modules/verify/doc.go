// Package verify holds the trust decision, in one place: a trust pool
// version (Anchors: plain CAs, or SPIFFE bundles whose authorities each
// vouch for their own trust domain only), the verification of a peer's
// chain against one such version, the one X509-SVID leaf rule, the scope
// of chains verified elsewhere (crypto/tls with Caddy's own trust_pool),
// the reasons a chain is refused (one vocabulary for logs, metrics and
// `caddy trustline explain`), and the record of a verification for the
// connection that made it, with the re-checks that follow the material it
// depended on.
//
// Pool sources (truststore, spiffeworkload) build Anchors; verifiers
// (truststore's live_trust, the TLS client to backends) verify with them;
// peer, passthrough and the topology report read the result. None of them
// re-derives it.
package verify
