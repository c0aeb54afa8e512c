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
// metrics registry (Caddy makes a new registry per config load).
type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- reloadsDesc
	ch <- certsDesc
	ch <- notAfterDesc
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	liveMu.Lock()
	defer liveMu.Unlock()
	for s := range live {
		ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(s.ok.Load()), s.kind, s.name, "ok")
		ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(s.failed.Load()), s.kind, s.name, "failed")
		ch <- prometheus.MustNewConstMetric(certsDesc, prometheus.GaugeValue, float64(s.certs.Load()), s.kind, s.name)
		if na := s.notAfter.Load(); na != 0 {
			ch <- prometheus.MustNewConstMetric(notAfterDesc, prometheus.GaugeValue, float64(na), s.kind, s.name)
		}
	}
}

// RegisterMetrics adds the material collector to ctx's metrics registry
// (once per registry).
func RegisterMetrics(ctx caddy.Context) {
	RegisterCollectors(ctx, "trustline material", collector{})
}

// RegisterCollectors adds collectors to ctx's metrics registry. Caddy
// makes one registry per config load, while the suite's collectors live
// at package level (counts carry across reloads), so registering one that
// is already there is expected and ignored; any other failure is logged
// as a warning naming what (it costs the metrics, not the config).
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
