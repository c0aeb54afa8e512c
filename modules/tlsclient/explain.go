package tlsclient

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/trustline/trustline/modules/verify"
)

// Setup is what `caddy trustline explain` reads of a TLS client of a
// backend, as in force now.
type Setup struct {
	// Identity is the client certificate's leaf (nil: none).
	Identity *x509.Certificate
	// IdentitySource names where it comes from.
	IdentitySource string
	// Trust says what the backend's certificate is verified against.
	Trust string
	// Pins are the upstream_identity values ("" when none).
	Pins string
	// ServerName is the name sent and verified ("": the upstream's host).
	ServerName string
	// Insecure: the backend is not verified (tls_insecure_skip_verify).
	Insecure bool
}

// Describe says what c presents and trusts now.
func (c *Client) Describe() Setup {
	s := Setup{ServerName: c.base.ServerName, Insecure: c.insecure}
	cert, source := c.identity()
	if cert != nil {
		s.Identity = cert.Leaf
	}
	s.IdentitySource = source
	if c.Keystore != nil {
		s.IdentitySource = "client_identity " + source
	}
	switch src := c.Pool.(type) {
	case nil:
		s.Trust = "the static roots of the tls config (none: the system roots)"
	case verify.OriginTeller:
		a := c.Pool.(verify.AnchorSource).CurrentAnchors()
		s.Trust = fmt.Sprintf("trust_pool %s, read at each handshake (%d anchor(s))", src.AnchorOrigin(nil), len(a.Certificates()))
	default:
		s.Trust = fmt.Sprintf("trust_pool %T, read at each handshake", src)
	}
	if !c.Pins.empty() {
		s.Pins = c.Pins.String()
	}
	return s
}

type probeKey struct{}

// Probe marks ctx as an operator's check of a backend (`caddy trustline
// explain --upstream`), not traffic: a Handshake with it that fails
// returns its *HandshakeError but is neither counted nor logged, so that
// the dashboard and the logs keep telling what the traffic meets.
func Probe(ctx context.Context) context.Context {
	return context.WithValue(ctx, probeKey{}, true)
}

func isProbe(ctx context.Context) bool {
	v, _ := ctx.Value(probeKey{}).(bool)
	return v
}
