// Package verify holds the trust decision, in one place: a trust pool
// version (Anchors: plain CAs, or SPIFFE bundles whose authorities each
// vouch for their own trust domain only), chain verification against it,
// the one X509-SVID leaf rule, the scope of chains crypto/tls verified,
// the reasons a chain is refused (one vocabulary for logs, metrics and
// explain), and the record of a verification for its connection, with
// the re-checks that follow the material it depended on. Pool sources
// build Anchors, verifiers verify with them, the rest read the result.
package verify
