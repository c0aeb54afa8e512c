package peer

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/internal/testpki"
)

func l4conn(t *testing.T, states ...*tls.ConnectionState) *layer4.Connection {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cx := layer4.WrapConnection(a, nil, zap.NewNop())
	for _, st := range states { // as caddy-l4's tls handler records them
		caddyinternals.AppendConnectionState(cx, st)
	}
	return cx
}

func TestL4MatchPeer(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	db := ca.Issue(t, testpki.URI("spiffe://example.org/db/client")).Cert
	web := ca.Issue(t, testpki.URI("spiffe://example.org/web")).Cert
	verified := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c, ca.Cert}}}
	}
	var m L4MatchPeer
	if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`peer spiffe://example.org/db/*`)); err != nil {
		t.Fatal(err)
	}
	provisioned(t, &m)
	cases := []struct {
		name   string
		states []*tls.ConnectionState
		want   bool
	}{
		{"verified allowed", []*tls.ConnectionState{verified(db)}, true},
		{"verified other", []*tls.ConnectionState{verified(web)}, false},
		{"no tls", nil, false},
		{"unverified", []*tls.ConnectionState{{PeerCertificates: []*x509.Certificate{db}}}, false},
		// the innermost TLS connection decides
		{"last state wins", []*tls.ConnectionState{verified(db), verified(web)}, false},
		{"last state wins 2", []*tls.ConnectionState{verified(web), verified(db)}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cx := l4conn(t, c.states...)
			got, err := m.Match(cx)
			if err != nil || got != c.want {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
			if c.states == nil {
				return
			}
			repl := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer)
			if got := repl.ReplaceKnown("{peer.verified}", ""); got != "true" && c.name != "unverified" {
				t.Fatalf("{peer.verified} = %q", got)
			}
		})
	}
	var bad L4MatchPeer
	err := bad.UnmarshalCaddyfile(caddyfile.NewTestDispenser("peer {\n\tport 5432\n}"))
	if err == nil || !strings.Contains(err.Error(), `layer4 peer matcher: unknown option "port"`) {
		t.Fatalf("error %v", err)
	}
}
