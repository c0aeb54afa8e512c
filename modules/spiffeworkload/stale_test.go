package spiffeworkload

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zapcore"

	"github.com/trustline/trustline/internal/testpki"
)

// setClock replaces the agent's clock (tests); nil restores time.Now.
func (a *agent) setClock(f func() time.Time) {
	if f == nil {
		a.clock.Store(nil)
		return
	}
	a.clock.Store(&f)
}

// staleOf lists the stale sources of the connection to addr.
func staleOf(addr string) []StaleSource {
	var out []StaleSource
	for _, s := range Stale() {
		if s.Socket == addr {
			out = append(out, s)
		}
	}
	return out
}

// staleGauge reads trustline_spiffe_workload_stale{socket=addr} from ctx's
// registry (-1 when there is no such series).
func staleGauge(t *testing.T, ctx caddy.Context, addr string) float64 {
	t.Helper()
	mfs, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "trustline_spiffe_workload_stale" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "socket" && l.GetValue() == addr {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// TestPoolStale: the agent goes away; once it has been gone for longer
// than max_stale the pool counts stale (listed for the report, the gauge
// at 1, one warning), and its last bundles stay in force; a pool without
// max_stale turns stale after the default 24h (the agent's clock moved
// on); the agent back, both are fresh again.
func TestPoolStale(t *testing.T) {
	ours := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ours}}, nil)
	f.set(resp)
	ctx := testCtx(t)
	p := &Pool{Agent: Agent{Socket: f.addr, MaxStale: caddy.Duration(300 * time.Millisecond)}}
	q := &Pool{Agent: Agent{Socket: f.addr}, TrustDomains: []string{"example.org"}}
	for _, m := range []*Pool{p, q} {
		if err := m.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Cleanup()
	}
	logs := observe(p.agent)
	if got := staleGauge(t, ctx, f.addr); got != 0 {
		t.Fatalf("stale gauge %v while the agent is up", got)
	}
	pool := p.CertPool()

	f.stop()
	eventually(t, 5*time.Second, "the pool with max_stale 300ms counts stale", func() bool { return len(staleOf(f.addr)) == 1 })
	s := staleOf(f.addr)[0]
	if s.Source != "trust pool spiffe_workload "+f.addr || !strings.Contains(s.Reason, "unreachable for longer than max_stale (300ms)") || s.Since.IsZero() {
		t.Fatalf("stale: %+v", s)
	}
	if got := staleGauge(t, ctx, f.addr); got != 1 {
		t.Fatalf("stale gauge %v", got)
	}
	if p.CertPool() != pool {
		t.Fatal("the stale pool was replaced")
	}
	warned := logs.FilterMessageSnippet("is stale").All()
	if len(warned) != 1 || warned[0].Level != zapcore.WarnLevel || warned[0].ContextMap()["source"] != s.Source {
		t.Fatalf("stale warnings: %+v", warned)
	}

	p.agent.setClock(func() time.Time { return time.Now().Add(25 * time.Hour) })
	eventually(t, 5*time.Second, "the pool with the default max_stale counts stale after 24h", func() bool { return len(staleOf(f.addr)) == 2 })
	if s := staleOf(f.addr); s[1].Source != "trust pool spiffe_workload "+f.addr+" example.org" || !strings.Contains(s[1].Reason, "(24h0m0s)") {
		t.Fatalf("stale: %+v", s)
	}
	p.agent.setClock(nil)

	f.start()
	eventually(t, retryMax+connRetryMax+3*time.Second, "fresh again once the agent is back", func() bool { return len(staleOf(f.addr)) == 0 })
	if got := staleGauge(t, ctx, f.addr); got != 0 {
		t.Fatalf("stale gauge %v once the agent is back", got)
	}
	if n := logs.FilterMessageSnippet("fresh again").Len(); n != 2 {
		t.Fatalf("%d 'fresh again' lines, want one per source", n)
	}
}

// TestKeystoreStale: a keystore counts stale when its SVID has expired
// (the default) or, with max_stale, once the agent has been gone that
// long, whichever comes first.
func TestKeystoreStale(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca,
		opts: []testpki.Option{testpki.Validity(time.Now().Add(-time.Minute), time.Now().Add(time.Hour))}}}, nil)
	f.set(resp)
	ctx := testCtx(t)
	k1 := &Keystore{Agent: Agent{Socket: f.addr}}
	k2 := &Keystore{Agent: Agent{Socket: f.addr, MaxStale: caddy.Duration(10 * time.Minute)}, Usage: "client_auth"}
	for _, k := range []*Keystore{k1, k2} {
		if err := k.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		defer k.Cleanup()
	}
	f.stop()
	eventually(t, 5*time.Second, "the loss is seen", func() bool { return !k1.agent.up.Load() })
	k1.agent.setClock(func() time.Time { return time.Now().Add(30 * time.Minute) })
	eventually(t, 5*time.Second, "the keystore with max_stale 10m counts stale", func() bool { return len(staleOf(f.addr)) == 1 })
	if s := staleOf(f.addr)[0]; s.Source != "keystore spiffe_workload "+f.addr+" default_svid client_auth" || !strings.Contains(s.Reason, "max_stale (10m0s)") {
		t.Fatalf("stale: %+v", s)
	}
	k1.agent.setClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	eventually(t, 5*time.Second, "the keystore without max_stale counts stale once its SVID expired", func() bool { return len(staleOf(f.addr)) == 2 })
	for _, s := range staleOf(f.addr) {
		if s.Source == "keystore spiffe_workload "+f.addr+" default_svid any" && !strings.Contains(s.Reason, "the X509-SVID expired at") {
			t.Fatalf("stale: %+v", s)
		}
	}
}
