package verify

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/material"
)

// The verdicts counted in trustline_client_verdicts_total.
const (
	VerdictAdmitted = "admitted"
	VerdictRefused  = "refused"
	// VerdictShadow: a shadow-mode rule would have refused.
	VerdictShadow = "shadow"
)

// verdicts counts every verdict on a peer's certificate, so that "clients
// suddenly failing mTLS" is one alert (recheck: an open connection closed
// after a trust change; reason "" for admitted).
var verdicts = material.NewCounterVec("trustline_client_verdicts_total",
	"Verdicts of the suite's client certificate verifiers, by verifier (live_trust, peer, recheck), verdict (admitted, refused, shadow) and reason.",
	"verifier", "verdict", "reason")

// CountVerdict counts one verdict; reason is a Reason constant, "" for an
// admitted peer.
func CountVerdict(verifier, verdict, reason string) {
	verdicts.WithLabelValues(verifier, verdict, reason).Inc()
}

// RegisterMetrics adds the verdict counter to ctx's metrics registry.
func RegisterMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "verify", verdicts)
}
