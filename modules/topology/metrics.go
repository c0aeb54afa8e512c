package topology

import (
	"cmp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// notAfterDesc is the gauge of every certificate the running config puts
// in play that the suite's material sources do not already report (those
// are trustline_material_not_after_timestamp_seconds): the server
// certificates Caddy loads or manages itself, client identities from
// tls_client_auth files, trust anchors of Caddy's own pools.
var notAfterDesc = prometheus.NewDesc("trustline_certificate_not_after_timestamp_seconds",
	"Not-after of a certificate in play in the running config, as a Unix time: server certificates Caddy serves (files and managed, from its certificate cache), client identities and trust anchors of Caddy's own modules.",
	[]string{"role", "subject", "source"}, nil)

// collector computes the gauges at each scrape from the running config.
type collector struct{ logger *zap.Logger }

func (collector) Describe(ch chan<- *prometheus.Desc) { ch <- notAfterDesc }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	rep, err := runningReport()
	if err != nil {
		c.logger.Warn("certificate expiry gauges: analysing the running config", zap.Error(err))
		return
	}
	for _, g := range gauges(rep) {
		m, err := prometheus.NewConstMetric(notAfterDesc, prometheus.GaugeValue, g.value, g.role, g.subject, g.source)
		if err != nil {
			c.logger.Warn("certificate expiry gauge", zap.String("subject", g.subject), zap.Error(err))
			continue
		}
		ch <- m
	}
}

type gauge struct {
	role, subject, source string
	value                 float64
}

// gauges are the report's certificates, except the suite's sources and
// those not read, one per label set (the earliest not-after wins: a
// registry refuses two samples with the same labels).
func gauges(rep *Report) []gauge {
	var out []gauge
	seen := map[[3]string]int{}
	for _, c := range rep.Certificates {
		if c.Suite || c.NotAfter == nil {
			continue
		}
		// label values must be UTF-8: a certificate's subject or a file
		// name need not be
		subject := strings.ToValidUTF8(cmp.Or(c.Subject, strings.Join(c.Names, ",")), "?")
		k := [3]string{c.Role, subject, strings.ToValidUTF8(c.Source, "?")}
		v := float64(c.NotAfter.Unix())
		if i, ok := seen[k]; ok {
			out[i].value = min(out[i].value, v)
			continue
		}
		seen[k] = len(out)
		out = append(out, gauge{k[0], k[1], k[2], v})
	}
	return out
}
