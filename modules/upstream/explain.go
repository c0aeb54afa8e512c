package upstream

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"

	"github.com/trustline/trustline/modules/verify"
)

// What `caddy trustline explain` reads of an upstream TLS client: the
// identity it presents and the trust it verifies backends with, as in
// force now, and the transport's own dial.

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
func (l *LiveTLS) Describe() Setup {
	var s Setup
	switch {
	case l.Identity != nil:
		if c := l.Identity.Identity(); c != nil {
			s.Identity = c.Leaf
		}
		s.IdentitySource = "client_identity " + l.IdentityName
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

// Live is the transport's TLS client (nil when it dials plain HTTP).
func (t *Transport) Live() *LiveTLS { return t.live }

// Dial dials addr and runs the TLS handshake exactly as the transport's
// own dial does for a request (its DialTLSContext: the server name from
// tls_server_name or the address, the identity and trust current now,
// LiveTLS.Handshake and its classification), and returns the connection
// or the *HandshakeError. Nil when the transport dials plain HTTP.
func (t *Transport) Dial() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.base == nil {
		return nil
	}
	return t.dialTLS
}

// ServerName is the server name the transport sends and verifies the
// backend against ("": the upstream's host).
func (t *Transport) ServerName() string {
	if t.base == nil {
		return ""
	}
	return t.base.ServerName
}
