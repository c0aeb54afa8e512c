package spiffeworkload

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

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
// reloads the others and releases those the agent no longer serves. It
// runs on the watch's goroutine only.
func (a *agent) syncBundleSources(x *workloadapi.X509Context) {
	served := map[string]bool{}
	for _, b := range x.Bundles.Bundles() {
		td := b.TrustDomain()
		served[td.Name()] = true
		if src, ok := a.bundles[td.Name()]; ok {
			_ = src.Reload()
		} else if src, err := material.Acquire(a.ctx, a.bundleSpec(td)); err == nil {
			a.bundles[td.Name()] = src
		} // else the pool's own load reports a bad bundle
	}
	for td := range a.bundles {
		if !served[td] {
			delete(a.bundles, td)
			material.Release(a.bundleKey(td))
		}
	}
}

func (a *agent) bundleSpec(td spiffeid.TrustDomain) material.Spec[struct{}] {
	return material.Spec[struct{}]{
		Kind: "spiffe_workload_bundle",
		Name: a.addr + " " + td.Name(),
		Key:  a.bundleKey(td.Name()),
		// the agent's answers drive the reloads; this is a safety net
		Poll: time.Minute,
		Load: func() (*material.Loaded[struct{}], error) {
			b, ok := a.current.Load().Bundles.Get(td)
			if !ok {
				return nil, fmt.Errorf("the agent no longer serves a bundle for %s", td.Name())
			}
			auth := b.X509Authorities()
			return &material.Loaded[struct{}]{Certificates: auth, Digest: digestOf(raws(auth))}, nil
		},
	}
}

// digestOf identifies a version by its parts (certificates, names), for
// the reloads.
func digestOf(parts [][]byte) [32]byte { return sha256.Sum256(bytes.Join(parts, []byte{0})) }

// raws is the DER of certs.
func raws(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
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

// liveAgents are the connections that answered and are not closed, for
// the metrics and Stale.
var (
	liveMu     sync.Mutex
	liveAgents = map[*agent]struct{}{}
)

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
