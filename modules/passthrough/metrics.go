package passthrough

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// The collectors live at package level, so counts carry across admin
// reloads; each config load has a registry of its own, and every
// Provision registers them there (registering twice is harmless).
var (
	connections = material.NewCounterVec("trustline_passthrough_connections_total",
		"Layer-4 connections handled by route and outcome (proxied, dial_failed, refused).",
		"route", "outcome")
	activeConnections = material.NewGaugeVec("trustline_passthrough_active_connections",
		"Passthrough connections open now, by route.",
		"route")
	transferred = material.NewCounterVec("trustline_passthrough_bytes_total",
		"Bytes proxied by route and direction (client_to_upstream, upstream_to_client), counted when a connection closes.",
		"route", "direction")
	dialFailures = material.NewCounterVec("trustline_passthrough_upstream_dial_failures_total",
		"Failed dials to passthrough upstreams, by route and upstream.",
		"route", "upstream")
	forcedCloses = material.NewCounterVec("trustline_passthrough_forced_closes_total",
		"Passthrough connections closed by the proxy, by route and reason (grace_period, max_lifetime, idle_timeout).",
		"route", "reason")
	helloErrors = material.NewCounterVec("trustline_passthrough_clienthello_errors_total",
		"First flights that were no routable ClientHello, by reason (not_tls, malformed, too_large, timeout, closed_early, read_error).",
		"reason")
	upstreamHealthy = material.NewGaugeVec("trustline_passthrough_upstream_healthy",
		"1 when the active health check last found the upstream up, 0 when down.",
		"upstream")
)

// registerMetrics adds the collectors to this config's registry.
func registerMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "passthrough", connections, activeConnections, transferred, dialFailures,
		forcedCloses, helloErrors, upstreamHealthy, tlsHandshakes)
}

// testLogger, when a test sets it, receives the logs of every module
// provisioned afterwards.
var testLogger *zap.Logger

func moduleLogger(ctx caddy.Context) *zap.Logger {
	if testLogger != nil {
		return testLogger
	}
	return ctx.Logger()
}
