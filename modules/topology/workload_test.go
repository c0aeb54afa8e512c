package topology_test

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/trustline/trustline/modules/spiffeworkload"
	"github.com/trustline/trustline/modules/topology"
)

// TestWorkloadStaleFinding: a spiffe_workload trust pool and keystore of
// the running instance that count their last answer stale get a warning at
// their own config path, naming the source and the reason; a fresh one, a
// source on another socket, and a report of a config on disk (no running
// state) get none.
func TestWorkloadStaleFinding(t *testing.T) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(`
https://api.example.org {
	tls {
		get_certificate keystore spiffe_workload {
			socket unix:///run/spire/agent.sock
		}
		client_auth {
			verifier live_trust spiffe_workload {
				socket unix:///run/spire/agent.sock
			}
		}
	}
	reverse_proxy https://10.0.0.5:8443 {
		transport mtls {
			trust_pool spiffe_workload {
				socket unix:///run/spire/other.sock
			}
		}
	}
}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2030, 5, 31, 0, 0, 0, 0, time.UTC)
	stale := []spiffeworkload.StaleSource{{
		Socket: "unix:///run/spire/agent.sock", Pool: true, Source: "trust pool spiffe_workload unix:///run/spire/agent.sock",
		Reason: "the Workload API has been unreachable for longer than max_stale (24h0m0s)", Since: since,
	}}
	rep, err := topology.Analyze(cfg, topology.Options{Now: goldenNow, StaleWorkloads: func() []spiffeworkload.StaleSource { return stale }})
	if err != nil {
		t.Fatal(err)
	}
	var got []topology.Finding
	for _, f := range rep.Findings {
		if f.Kind == topology.KindWorkloadStale {
			got = append(got, f)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d stale findings, want the live_trust pool's only: %+v", len(got), got)
	}
	f := got[0]
	if f.Severity != topology.SeverityWarning || !strings.Contains(f.Path, "client_authentication.verifiers[0].trust_pool") ||
		!strings.Contains(f.Message, "trust pool spiffe_workload unix:///run/spire/agent.sock serves stale bundles since 2030-05-31T00:00:00Z: the Workload API has been unreachable for longer than max_stale (24h0m0s)") ||
		!strings.Contains(f.Fix, "unix:///run/spire/agent.sock") {
		t.Fatalf("finding: %+v", f)
	}

	stale[0].Pool = false
	stale[0].Source = "keystore spiffe_workload unix:///run/spire/agent.sock default_svid server_auth"
	rep, _ = topology.Analyze(cfg, topology.Options{Now: goldenNow, StaleWorkloads: func() []spiffeworkload.StaleSource { return stale }})
	if kinds := findingKinds(rep); kinds[topology.KindWorkloadStale] != topology.SeverityWarning {
		t.Fatalf("no finding for a stale keystore: %v", kinds)
	}
	for _, f := range rep.Findings {
		if f.Kind == topology.KindWorkloadStale && (!strings.Contains(f.Path, "get_certificate") || !strings.Contains(f.Message, "stale X509-SVID")) {
			t.Fatalf("keystore finding: %+v", f)
		}
	}

	rep, _ = topology.Analyze(cfg, topology.Options{Now: goldenNow})
	if _, ok := findingKinds(rep)[topology.KindWorkloadStale]; ok {
		t.Fatal("a stale finding without running state")
	}
}
