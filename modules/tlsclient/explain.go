package tlsclient

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/trustline/trustline/modules/verify"
)

// What `caddy trustline explain` reads of a TLS client of a backend: the
// identity it presents and the trust it verifies backends with, as in
// force now.

// Setup describes an upstream TLS client as in force now.
type Setup struct {
	// Identity is the client certificate presented: its leaf (nil: none).
	Identity *x509.Certificate
	// IdentitySource names where it comes from.
	IdentitySource string
	// Trust says what the backend's certificate is verified against.
	Trust string
	// Pins are the upstream_identity values ("" when none).
	Pins string
	// Insecure: the backend is not verified (tls_insecure_skip_verify).
	Insecure bool
}

// Describe says what l presents and trusts now.
func (l *Client) Describe() Setup {
	var s Setup
	switch {
	case l.Keystore != nil:
		if c := l.Keystore.KeyPair(); c != nil {
			s.Identity = c.Leaf
		}
		s.IdentitySource = "client_identity " + l.Keystore.Name()
	case len(l.static) > 0:
		s.Identity = l.static[0].Leaf
		s.IdentitySource = "tls_client_auth (read once)"
	}
	switch src := l.Pool.(type) {
	case nil:
		s.Trust = "the static roots of the tls config (none: the system roots)"
	case verify.OriginTeller:
		a := l.Pool.(verify.AnchorSource).CurrentAnchors()
		s.Trust = fmt.Sprintf("trust_pool %s, read at each handshake (%d anchor(s))", src.AnchorOrigin(nil), len(a.Certificates()))
	default:
		s.Trust = fmt.Sprintf("trust_pool %T, read at each handshake", src)
	}
	if !l.Pins.empty() {
		s.Pins = l.Pins.String()
	}
	s.Insecure = l.insecure
	return s
}

type probeKey struct{}

// Probe marks ctx as an operator's check of a backend (`caddy trustline
// explain --upstream`), not traffic: a Handshake made with it that fails
// returns its *HandshakeError as any other, but is neither counted in
// trustline_upstream_handshake_failures_total nor logged as `upstream
// TLS handshake failed`: the caller reports it, and the dashboard and
// the logs keep telling what the traffic meets.
func Probe(ctx context.Context) context.Context {
	return context.WithValue(ctx, probeKey{}, true)
}

func isProbe(ctx context.Context) bool {
	v, _ := ctx.Value(probeKey{}).(bool)
	return v
}
