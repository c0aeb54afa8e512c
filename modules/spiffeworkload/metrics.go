package spiffeworkload

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/trustline/trustline/modules/material"
)

// Each bundle the agent serves is a material source of its own (kind
// spiffe_workload_bundle, source "<socket> <trust domain>"), so that
// trustline_material_not_after_timestamp_seconds has the earliest
// not-after of each trust domain's authorities, and the reloads count
// each bundle's changes. They follow the agent's answers and live as long
// as the connection (or until the agent stops serving the domain).

func (a *agent) bundleKey(td string) string { return "spiffe_workload_bundle|" + a.addr + "|" + td }

// syncBundleSources acquires a source for each new trust domain in x,
// reloads the others and releases those the agent no longer serves.
func (a *agent) syncBundleSources(x *workloadapi.X509Context) {
	served := map[string]bool{}
	for _, b := range x.Bundles.Bundles() {
		served[b.TrustDomain().Name()] = true
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	held := maps.Clone(a.bundles)
	a.mu.Unlock()
	for _, td := range slices.Sorted(maps.Keys(served)) {
		if src, ok := held[td]; ok {
			_ = src.Reload()
			continue
		}
		src, err := material.Acquire(a.ctx, a.bundleSpec(td))
		if err != nil {
			continue // the pool's own load reports a bad bundle
		}
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			material.Release(a.bundleKey(td))
			return
		}
		a.bundles[td] = src
		a.mu.Unlock()
	}
	for td := range held {
		if !served[td] {
			a.mu.Lock()
			delete(a.bundles, td)
			a.mu.Unlock()
			material.Release(a.bundleKey(td))
		}
	}
}

func (a *agent) bundleSpec(tdName string) material.Spec[struct{}] {
	return material.Spec[struct{}]{
		Kind: "spiffe_workload_bundle",
		Name: a.addr + " " + tdName,
		Key:  a.bundleKey(tdName),
		// the agent's answers drive the reloads; this is a safety net
		Poll: time.Minute,
		Load: func() (*material.Loaded[struct{}], error) {
			x := a.current.Load()
			td, err := spiffeid.TrustDomainFromString(tdName)
			if err != nil {
				return nil, err
			}
			b, ok := x.Bundles.Get(td)
			if !ok {
				return nil, fmt.Errorf("the agent no longer serves a bundle for %s", tdName)
			}
			auth := b.X509Authorities()
			h := sha256.New()
			for _, c := range auth {
				h.Write(c.Raw)
			}
			l := &material.Loaded[struct{}]{Certificates: auth}
			copy(l.Digest[:], h.Sum(nil))
			return l, nil
		},
	}
}

// The connection's own state, beside the material metrics.
var (
	disconnectsDesc = prometheus.NewDesc("trustline_spiffe_workload_disconnects_total",
		"Times the Workload API became unreachable after answering (the last SVIDs and bundles stay in force).",
		[]string{"socket"}, nil)
	connectedDesc = prometheus.NewDesc("trustline_spiffe_workload_connected",
		"1 while the Workload API's stream is up, 0 while it is being reconnected.",
		[]string{"socket"}, nil)
	staleDesc = prometheus.NewDesc("trustline_spiffe_workload_stale",
		"1 while a module counts the last answer of the Workload API stale (the agent unreachable for longer than its max_stale, or the SVID it serves expired); the answer stays in force.",
		[]string{"socket"}, nil)
)

var (
	liveMu     sync.Mutex
	liveAgents = map[*agent]struct{}{}
)

func registerAgent(a *agent) {
	liveMu.Lock()
	defer liveMu.Unlock()
	liveAgents[a] = struct{}{}
}

func unregisterAgent(a *agent) {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(liveAgents, a)
}

type agentCollector struct{}

func (agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- disconnectsDesc
	ch <- connectedDesc
	ch <- staleDesc
}

func (agentCollector) Collect(ch chan<- prometheus.Metric) {
	liveMu.Lock()
	defer liveMu.Unlock()
	for a := range liveAgents {
		ch <- prometheus.MustNewConstMetric(disconnectsDesc, prometheus.CounterValue, float64(a.disconnects.Load()), a.addr)
		up := 0.0
		if a.up.Load() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, up, a.addr)
		stale := 0.0
		if a.isStale() {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, stale, a.addr)
	}
}

func registerAgentMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "spiffe_workload", agentCollector{})
}
