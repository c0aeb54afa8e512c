package material

import (
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// sourceStats are the numbers a source keeps for /metrics. They live with
// the shared Reloadable, so they survive admin reloads that keep it.
type sourceStats struct {
	kind, name string
	ok, failed atomic.Uint64
	certs      atomic.Int64
	notAfter   atomic.Int64 // earliest not-after, Unix seconds; 0 when none
}

func (s *sourceStats) setCertificates(certs []*x509.Certificate, notAfter time.Time) {
	s.certs.Store(int64(len(certs)))
	var earliest int64
	if !notAfter.IsZero() {
		earliest = notAfter.Unix()
	}
	for _, c := range certs {
		if na := c.NotAfter.Unix(); earliest == 0 || na < earliest {
			earliest = na
		}
	}
	s.notAfter.Store(earliest)
}

var (
	liveMu sync.Mutex
	live   = map[*sourceStats]struct{}{}
)

func registerStats(s *sourceStats) {
	liveMu.Lock()
	defer liveMu.Unlock()
	live[s] = struct{}{}
}

func unregisterStats(s *sourceStats) {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(live, s)
}

var (
	reloadsDesc = prometheus.NewDesc("trustline_material_reloads_total",
		"Loads of trust or identity material by source and result (ok, failed).",
		[]string{"kind", "source", "result"}, nil)
	certsDesc = prometheus.NewDesc("trustline_material_certificates",
		"Certificates currently held by a source.",
		[]string{"kind", "source"}, nil)
	notAfterDesc = prometheus.NewDesc("trustline_material_not_after_timestamp_seconds",
		"Earliest not-after of the certificates a source holds (for CRLs, the earliest nextUpdate), as a Unix time.",
		[]string{"kind", "source"}, nil)
)

// collector reports every live source; one is registered in each config's
// metrics registry.
type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- reloadsDesc
	ch <- certsDesc
	ch <- notAfterDesc
}

// Collect reports one series per (kind, source). Live sources that share
// those labels (a keystore loaded for two usages) are merged (reloads
// added up, the most certificates, the earliest not-after): a registry
// refuses a scrape with the same series twice.
func (collector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ kind, name string }
	type sums struct {
		ok, failed      uint64
		certs, notAfter int64
	}
	merged := map[key]*sums{}
	liveMu.Lock()
	for s := range live {
		k := key{s.kind, s.name}
		m := merged[k]
		if m == nil {
			m = new(sums)
			merged[k] = m
		}
		m.ok += s.ok.Load()
		m.failed += s.failed.Load()
		m.certs = max(m.certs, s.certs.Load())
		if na := s.notAfter.Load(); na != 0 && (m.notAfter == 0 || na < m.notAfter) {
			m.notAfter = na
		}
	}
	liveMu.Unlock()
	for k, m := range merged {
		ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(m.ok), k.kind, k.name, "ok")
		ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(m.failed), k.kind, k.name, "failed")
		ch <- prometheus.MustNewConstMetric(certsDesc, prometheus.GaugeValue, float64(m.certs), k.kind, k.name)
		if m.notAfter != 0 {
			ch <- prometheus.MustNewConstMetric(notAfterDesc, prometheus.GaugeValue, float64(m.notAfter), k.kind, k.name)
		}
	}
}

// NewCounterVec makes one of the suite's counters from its whole name
// (trustline_...), its help and its labels; RegisterCollectors adds it to
// a config's registry.
func NewCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// NewGaugeVec is NewCounterVec for a gauge.
func NewGaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

// RegisterMetrics adds the material collector to ctx's metrics registry
// (once per registry).
func RegisterMetrics(ctx caddy.Context) {
	RegisterCollectors(ctx, "trustline material", collector{})
}

// RegisterCollectors adds collectors to ctx's metrics registry (Caddy makes
// one per config load; the suite's collectors live at package level, so one
// already there is ignored). Any other failure is logged as a warning
// naming what: it costs the metrics, not the config.
func RegisterCollectors(ctx caddy.Context, what string, collectors ...prometheus.Collector) {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				ctx.Logger().Warn("registering "+what+" metrics", zap.Error(err))
			}
		}
	}
}
