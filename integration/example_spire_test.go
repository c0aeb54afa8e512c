package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
)

// TestExampleSPIRE runs examples/spire: a SPIRE server, an agent per node
// and two Caddy nodes whose SVIDs and bundle come from the Workload API.
// Each node calls the other over mTLS pinned by SPIFFE ID; a workload of
// the same trust domain that is not a node is refused; the metrics show
// the SVID and the bundle.
func TestExampleSPIRE(t *testing.T) {
	spire := bench.SPIREDir(t)
	server := bench.FreeAddr(t)
	peers := []string{bench.FreeAddr(t), bench.FreeAddr(t)}
	apis := []string{bench.FreeAddr(t), bench.FreeAddr(t)}
	admins := []string{bench.FreeAddr(t), bench.FreeAddr(t)}
	ex := runExample(t, "spire", "TRUSTLINE_SPIRE_DIR="+spire, "SERVER_PORT="+bench.Port(server),
		"A_PEER="+bench.Port(peers[0]), "B_PEER="+bench.Port(peers[1]),
		"A_API="+bench.Port(apis[0]), "B_API="+bench.Port(apis[1]),
		"A_ADMIN="+admins[0], "B_ADMIN="+admins[1])

	if got := curlOK(t, "http://"+apis[0]+"/to/b"); got != "b: hello spiffe://example.org/node/a\n" {
		t.Errorf("a -> b: %q", got)
	}
	if got := curlOK(t, "http://"+apis[1]+"/to/a"); got != "a: hello spiffe://example.org/node/b\n" {
		t.Errorf("b -> a: %q", got)
	}
	nodeA := "a.example.internal:" + bench.Port(peers[0])
	curlRefused(t, "--cacert", ex.file("bundle.pem"), "--cert", ex.file("web/svid.0.pem"), "--key", ex.file("web/svid.0.key"),
		"--resolve", nodeA+":127.0.0.1", "https://"+nodeA+"/")
	ex.proc.WaitLog(t, `"spiffe_id":"spiffe://example.org/app/web"`, 5*time.Second)

	metrics := adminMetrics(t, admins[0])
	for _, want := range []string{
		`trustline_material_certificates{kind="keystore",source="spiffe_workload unix://` + ex.Dir + `/agent-a/agent.sock spiffe://example.org/node/a server_auth"} 1`,
		`trustline_material_certificates{kind="keystore",source="spiffe_workload unix://` + ex.Dir + `/agent-a/agent.sock spiffe://example.org/node/a client_auth"} 1`,
		`trustline_material_certificates{kind="spiffe_workload",source="unix://` + ex.Dir + `/agent-a/agent.sock example.org"} 1`,
		`trustline_spiffe_workload_connected{socket="unix://` + ex.Dir + `/agent-a/agent.sock"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("node a's metrics lack %s", want)
		}
	}
}
