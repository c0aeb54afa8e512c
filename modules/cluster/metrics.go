package cluster

import (
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trustline/trustline/modules/material"
)

// caStats are the numbers kept per CA for /metrics; they live in the
// process, so they survive config reloads.
type caStats struct {
	renewed, renewFailed, followed atomic.Uint64
	rollbacks                      atomic.Uint64 // stored intermediates refused as older than the one held
	notAfter                       atomic.Int64  // Unix seconds of the stored intermediate seen last
}

var stats sync.Map // CA ID -> *caStats

func statsFor(id string) *caStats {
	s, _ := stats.LoadOrStore(id, new(caStats))
	return s.(*caStats)
}

var (
	renewalsDesc = prometheus.NewDesc("trustline_cluster_intermediate_renewals_total",
		"Renewals of a pki CA's intermediate made by this node for the cluster, by result (ok, failed).",
		[]string{"ca", "result"}, nil)
	followedDesc = prometheus.NewDesc("trustline_cluster_intermediate_changes_followed_total",
		"Intermediates stored by another node (or by Caddy itself) that this node followed.",
		[]string{"ca"}, nil)
	rollbacksDesc = prometheus.NewDesc("trustline_cluster_intermediate_rollbacks_refused_total",
		"Intermediates found in storage that were older than the one this node held (rolled back in storage), refused and renewed over.",
		[]string{"ca"}, nil)
	notAfterDesc = prometheus.NewDesc("trustline_cluster_intermediate_not_after_timestamp_seconds",
		"Not-after of the CA's intermediate as storage holds it, as a Unix time.",
		[]string{"ca"}, nil)
)

type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- renewalsDesc
	ch <- followedDesc
	ch <- rollbacksDesc
	ch <- notAfterDesc
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	stats.Range(func(k, v any) bool {
		id, s := k.(string), v.(*caStats)
		ch <- prometheus.MustNewConstMetric(renewalsDesc, prometheus.CounterValue, float64(s.renewed.Load()), id, "ok")
		ch <- prometheus.MustNewConstMetric(renewalsDesc, prometheus.CounterValue, float64(s.renewFailed.Load()), id, "failed")
		ch <- prometheus.MustNewConstMetric(followedDesc, prometheus.CounterValue, float64(s.followed.Load()), id)
		ch <- prometheus.MustNewConstMetric(rollbacksDesc, prometheus.CounterValue, float64(s.rollbacks.Load()), id)
		if na := s.notAfter.Load(); na != 0 {
			ch <- prometheus.MustNewConstMetric(notAfterDesc, prometheus.GaugeValue, float64(na), id)
		}
		return true
	})
}

// registerMetrics adds the collector to ctx's metrics registry (Caddy
// makes one per config load).
func registerMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "trustline_cluster", collector{})
}
