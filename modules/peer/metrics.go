package peer

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/revocation"
)

// The collectors live at package level, so counts carry across admin
// reloads; every Provision registers them in its config's registry
// (registering twice is harmless).
var (
	peerDecisions = material.NewCounterVec("trustline_peer_decisions_total",
		"Peer identity decisions that refused a peer, by where (verifier: the TLS handshake; authorize: an HTTP request) and outcome (refused, shadow: would have been refused).",
		"where", "outcome")
)

func registerMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "peer", peerDecisions)
	revocation.RegisterMetrics(ctx) // the verifier's revocation checks
}
