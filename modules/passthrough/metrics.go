package passthrough

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// The collectors live at package level, so counts carry across admin
// reloads; each config load has a registry of its own, and every
// Provision registers them there (registering twice is harmless).
var (
	connections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trustline", Subsystem: "passthrough", Name: "connections_total",
		Help: "Layer-4 connections handled by route and outcome (proxied, dial_failed, refused).",
	}, []string{"route", "outcome"})
	activeConnections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "trustline", Subsystem: "passthrough", Name: "active_connections",
		Help: "Passthrough connections open now, by route.",
	}, []string{"route"})
	transferred = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trustline", Subsystem: "passthrough", Name: "bytes_total",
		Help: "Bytes proxied by route and direction (client_to_upstream, upstream_to_client), counted when a connection closes.",
	}, []string{"route", "direction"})
	dialFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trustline", Subsystem: "passthrough", Name: "upstream_dial_failures_total",
		Help: "Failed dials to passthrough upstreams, by route and upstream.",
	}, []string{"route", "upstream"})
	forcedCloses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trustline", Subsystem: "passthrough", Name: "forced_closes_total",
		Help: "Passthrough connections closed by the proxy, by route and reason (grace_period, max_lifetime, idle_timeout).",
	}, []string{"route", "reason"})
	helloErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trustline", Subsystem: "passthrough", Name: "clienthello_errors_total",
		Help: "First flights that were no routable ClientHello, by reason (not_tls, malformed, too_large, timeout, closed_early, read_error).",
	}, []string{"reason"})
	upstreamHealthy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "trustline", Subsystem: "passthrough", Name: "upstream_healthy",
		Help: "1 when the active health check last found the upstream up, 0 when down.",
	}, []string{"upstream"})
)

var allCollectors = []prometheus.Collector{
	connections, activeConnections, transferred, dialFailures, forcedCloses, helloErrors, upstreamHealthy,
	tlsHandshakes,
}

// registerMetrics adds the collectors to this config's registry.
func registerMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "passthrough", allCollectors...)
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
