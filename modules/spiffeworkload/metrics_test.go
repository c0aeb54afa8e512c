package spiffeworkload

import (
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestMetrics: the SVID used for two usages (a site certificate and a
// client identity), the pool and each bundle are material sources of
// their own names, and the scrape gathers without a duplicate series.
func TestMetrics(t *testing.T) {
	ours := testpki.NewCA(t, "example.org ca")
	partner := testpki.NewCA(t, "partner.test ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ours}}, map[string]*testpki.CA{"partner.test": partner})
	f.set(resp)
	ctx := testCtx(t)
	k1 := &Keystore{Socket: f.addr, SPIFFEID: "spiffe://example.org/a", Usage: "server_auth"}
	k2 := &Keystore{Socket: f.addr, SPIFFEID: "spiffe://example.org/a", Usage: "client_auth"}
	p := &Pool{Socket: f.addr}
	if err := k1.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer k1.Cleanup()
	if err := k2.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer k2.Cleanup()
	if err := p.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Cleanup()

	mfs, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b.WriteString(mf.GetName())
			for _, l := range m.GetLabel() {
				b.WriteString(" " + l.GetName() + "=" + l.GetValue())
			}
			b.WriteString("\n")
		}
	}
	out := b.String()
	for _, want := range []string{
		"trustline_material_certificates kind=keystore source=spiffe_workload " + f.addr + " spiffe://example.org/a server_auth",
		"trustline_material_certificates kind=keystore source=spiffe_workload " + f.addr + " spiffe://example.org/a client_auth",
		"trustline_material_certificates kind=spiffe_workload source=" + f.addr,
		"trustline_material_not_after_timestamp_seconds kind=spiffe_workload_bundle source=" + f.addr + " example.org",
		"trustline_material_not_after_timestamp_seconds kind=spiffe_workload_bundle source=" + f.addr + " partner.test",
		"trustline_spiffe_workload_disconnects_total socket=" + f.addr,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no series %s in:\n%s", want, out)
		}
	}
}
