package spiffeworkload

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

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
	k1 := &Keystore{Agent: Agent{Socket: f.addr}, SPIFFEID: "spiffe://example.org/a", Usage: "server_auth"}
	k2 := &Keystore{Agent: Agent{Socket: f.addr}, SPIFFEID: "spiffe://example.org/a", Usage: "client_auth"}
	p := &Pool{Agent: Agent{Socket: f.addr}}
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

	want := []string{
		"trustline_material_certificates kind=keystore source=spiffe_workload " + f.addr + " spiffe://example.org/a server_auth",
		"trustline_material_certificates kind=keystore source=spiffe_workload " + f.addr + " spiffe://example.org/a client_auth",
		"trustline_material_certificates kind=spiffe_workload source=" + f.addr,
		"trustline_material_not_after_timestamp_seconds kind=spiffe_workload_bundle source=" + f.addr + " example.org",
		"trustline_material_not_after_timestamp_seconds kind=spiffe_workload_bundle source=" + f.addr + " partner.test",
		"trustline_spiffe_workload_disconnects_total socket=" + f.addr,
		"trustline_spiffe_workload_stale socket=" + f.addr,
	}
	var out string
	// the bundle sources are acquired on the watch's goroutine just after
	// the first answer is stored: wait for them, with a deadline
	deadline := time.Now().Add(5 * time.Second)
	for {
		out = series(t, ctx)
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return strings.Contains(out, w+"\n") })
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no series %s in:\n%s", strings.Join(missing, ", "), out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// series gathers ctx's registry into one line per series: the name, then
// each label as name=value.
func series(t *testing.T, ctx caddy.Context) string {
	t.Helper()
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
	return b.String()
}
