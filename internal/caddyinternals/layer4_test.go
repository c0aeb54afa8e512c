package caddyinternals

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
	"go.uber.org/zap"
)

// TestCaddyL4Variables: AppendClientHello and AppendConnectionState (used
// by passthrough's terminate_tls) store the ClientHello and the
// connection state under caddy-l4's own unexported variable names and
// types, so caddy-l4's getters (used by its matchers, the suite's peer
// matcher and the passthrough handler) find them. A caddy-l4 upgrade that
// renames them fails here.
func TestCaddyL4Variables(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cx := layer4.WrapConnection(a, nil, zap.NewNop())

	AppendClientHello(cx, &tls.ClientHelloInfo{ServerName: "one.example"})
	AppendClientHello(cx, &tls.ClientHelloInfo{ServerName: "two.example"})
	hellos := l4tls.GetClientHelloInfos(cx)
	if len(hellos) != 2 || hellos[0].ServerName != "one.example" || hellos[1].ServerName != "two.example" {
		t.Fatalf("caddy-l4 %s connection variable %q: l4tls.GetClientHelloInfos read %+v", CaddyL4Version, varClientHellos, hellos)
	}

	first, second := &tls.ConnectionState{ServerName: "one.example"}, &tls.ConnectionState{ServerName: "two.example"}
	AppendConnectionState(cx, first)
	AppendConnectionState(cx, second)
	if states := l4tls.GetConnectionStates(cx); len(states) != 2 || states[0] != first || states[1] != second {
		t.Fatalf("caddy-l4 %s connection variable %q: l4tls.GetConnectionStates read %+v", CaddyL4Version, varConnectionStates, states)
	}
	// what the passthrough handler reads after a wrap by the handler
	if states := l4tls.GetConnectionStates(cx.Wrap(b)); len(states) != 2 {
		t.Fatalf("caddy-l4 %s: a connection wrapped by cx.Wrap lost the states: %+v", CaddyL4Version, states)
	}
}
