package material

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCollectSharedLabels: two live sources with the same kind and name
// (one keystore file loaded for two usages) make one series each, merged;
// a registry refused the whole scrape when they came twice.
func TestCollectSharedLabels(t *testing.T) {
	a := &sourceStats{kind: "keystore", name: "/etc/tl/id.pem"}
	b := &sourceStats{kind: "keystore", name: "/etc/tl/id.pem"}
	a.ok.Add(2)
	b.ok.Add(1)
	b.failed.Add(1)
	a.certs.Store(2)
	b.certs.Store(2)
	a.notAfter.Store(2000)
	b.notAfter.Store(1000)
	registerStats(a)
	registerStats(b)
	defer unregisterStats(a)
	defer unregisterStats(b)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{})
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["source"] != "/etc/tl/id.pem" {
				continue
			}
			name := f.GetName() + "/" + labels["result"]
			if m.GetCounter() != nil {
				got[name] += m.GetCounter().GetValue()
			} else {
				got[name] += m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"trustline_material_reloads_total/ok":             3,
		"trustline_material_reloads_total/failed":         1,
		"trustline_material_certificates/":                2,
		"trustline_material_not_after_timestamp_seconds/": 1000,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
