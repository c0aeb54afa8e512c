package caddyinternals

import (
	"crypto/tls"

	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
)

// CaddyL4Version is the caddy-l4 version these reaches were written
// against (TestVersions checks that go.mod pins it).
const CaddyL4Version = "v0.0.0-20250530154005-4d3c80e89c5f"

// The connection variables caddy-l4's tls handler fills and
// l4tls.GetClientHelloInfos / GetConnectionStates read: unexported names,
// written by no public function. TestCaddyL4Variables pins them.
const (
	varClientHellos     = "tls_client_hellos"
	varConnectionStates = "tls_connection_states"
)

// AppendClientHello records a ClientHello on cx as caddy-l4's tls handler
// does, for l4tls.GetClientHelloInfos and caddy-l4's matchers.
func AppendClientHello(cx *layer4.Connection, hello *tls.ClientHelloInfo) {
	hellos, _ := cx.GetVar(varClientHellos).([]l4tls.ClientHelloInfo)
	cx.SetVar(varClientHellos, append(hellos, l4tls.ClientHelloInfo{ClientHelloInfo: *hello}))
}

// AppendConnectionState records a finished handshake on cx as caddy-l4's
// tls handler does, for l4tls.GetConnectionStates (caddy-l4's matchers,
// the layer-4 peer matcher, the passthrough handler).
func AppendConnectionState(cx *layer4.Connection, state *tls.ConnectionState) {
	states, _ := cx.GetVar(varConnectionStates).([]*tls.ConnectionState)
	cx.SetVar(varConnectionStates, append(states, state))
}
