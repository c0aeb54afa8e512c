package passthrough

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
	"go.uber.org/zap"
)

// TestTerminateTLSRecordsWhatCaddyL4Reads: terminate_tls stores the
// ClientHello and the connection state under caddy-l4's own variable
// names and types, so caddy-l4's getters (used by its matchers, the
// suite's peer matcher and the passthrough handler) find them. A caddy-l4
// upgrade that renames them fails here.
func TestTerminateTLSRecordsWhatCaddyL4Reads(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cx := layer4.WrapConnection(a, nil, zap.NewNop())

	recordHello(cx, &tls.ClientHelloInfo{ServerName: "one.example"})
	recordHello(cx, &tls.ClientHelloInfo{ServerName: "two.example"})
	hellos := l4tls.GetClientHelloInfos(cx)
	if len(hellos) != 2 || hellos[0].ServerName != "one.example" || hellos[1].ServerName != "two.example" {
		t.Fatalf("GetClientHelloInfos: %+v", hellos)
	}

	first, second := &tls.ConnectionState{ServerName: "one.example"}, &tls.ConnectionState{ServerName: "two.example"}
	recordState(cx, first)
	recordState(cx, second)
	if states := l4tls.GetConnectionStates(cx); len(states) != 2 || states[0] != first || states[1] != second {
		t.Fatalf("GetConnectionStates: %+v", states)
	}
	// what the passthrough handler reads after a wrap by the handler
	if states := l4tls.GetConnectionStates(cx.Wrap(b)); len(states) != 2 {
		t.Fatalf("a wrapped connection lost the states: %+v", states)
	}
}
