package spiffeworkload

import (
	"net"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/trustline/trustline/internal/testpki"
)

// nonLoopbackIP is an IPv4 address of this machine that is not a loopback
// address, to stand for an agent on another host.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address")
	return ""
}

// TestTCPSocketRefused: a tcp:// socket to an address that is not a
// loopback address (plaintext, unauthenticated gRPC across a network: the
// SVIDs' private keys readable, the bundles forgeable on the way) fails
// the load before anything is dialed, whether the address comes from the
// socket option or from SPIFFE_ENDPOINT_SOCKET, with what to write; with
// insecure_tcp it is used, and a warning says so.
func TestTCPSocketRefused(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgentTCP(t, nonLoopbackIP(t)).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca}}, nil)
	f.set(resp)

	for name, m := range map[string]interface {
		caddy.Provisioner
		Cleanup() error
	}{
		"keystore": &Keystore{Agent: Agent{Socket: f.addr}},
		"pool":     &Pool{Agent: Agent{Socket: f.addr}},
	} {
		err := m.Provision(testCtx(t))
		m.Cleanup()
		if err == nil || !strings.Contains(err.Error(), "socket "+f.addr+" is plaintext, unauthenticated gRPC to another host") ||
			!strings.Contains(err.Error(), "set insecure_tcp") {
			t.Errorf("%s: got %v", name, err)
		}
	}
	t.Setenv(workloadapi.SocketEnv, f.addr)
	k := &Keystore{}
	err := k.Provision(testCtx(t))
	k.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "plaintext, unauthenticated gRPC") {
		t.Errorf("from %s: got %v", workloadapi.SocketEnv, err)
	}
	if n := f.streams.Load(); n != 0 {
		t.Fatalf("%d streams opened to a refused address", n)
	}

	logs := observeNew(t)
	k = &Keystore{Agent: Agent{Socket: f.addr, InsecureTCP: true}}
	if err := k.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer k.Cleanup()
	if k.KeyPair() == nil {
		t.Fatal("no identity over insecure_tcp")
	}
	warned := logs.FilterMessageSnippet("plaintext, unauthenticated gRPC").All()
	if len(warned) != 1 || warned[0].Level.String() != "warn" || warned[0].ContextMap()["socket"] != f.addr {
		t.Fatalf("insecure_tcp warnings: %+v", warned)
	}
}

// TestTCPSocketLoopback: tcp:// to a loopback address needs no opt-in
// (the traffic never leaves the machine) and logs no warning.
func TestTCPSocketLoopback(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgentTCP(t, "127.0.0.1").start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca}}, nil)
	f.set(resp)
	logs := observeNew(t)
	p := &Pool{Agent: Agent{Socket: f.addr}}
	if err := p.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer p.Cleanup()
	if n := logs.FilterMessageSnippet("plaintext").Len(); n != 0 {
		t.Fatalf("%d warnings for a loopback address", n)
	}
}
