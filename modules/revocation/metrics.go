package revocation

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/material"
)

// revocationChecks lives at package level, so counts carry across admin
// reloads. Its name keeps the peer subsystem: it counts the checks of the
// peer verifier, and dashboards know it by that name.
var revocationChecks = material.NewCounterVec("trustline_peer_revocation_checks_total",
	"Revocation checks of client certificate chains at the handshake, by method (crl, ocsp) and result (good, revoked: revoked or unknown, unavailable: no usable status so refused, soft_fail: no usable status but let through).",
	"method", "result")

// crlRefused counts the CRLs the successor rule refused (successor.go),
// once per distinct content and source.
var crlRefused = material.NewCounterVec("trustline_peer_crl_refused_total",
	"CRLs refused by the successor rule, the one in force kept, by origin (file, distribution_point) and reason (issuer: not the CRL of the certificates' issuer, or a file version without an issuer's CRL; signature: not signed by the issuer; number: a lower CRL number; number_missing: no CRL number after one that had one; this_update: an earlier thisUpdate).",
	"origin", "reason")

// RegisterMetrics registers the revocation collectors in ctx's metrics
// registry (registering twice is harmless). Provision calls it; the peer
// modules call it too, so that /metrics holds the same series whichever
// peer module a config provisions.
func RegisterMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "peer", revocationChecks, crlRefused)
}
