package upstream

import (
	"context"
	"net"

	"github.com/trustline/trustline/modules/tlsclient"
)

// What `caddy trustline explain` reads of the transport: its TLS client
// and its own dial.

// Live is the transport's TLS client (nil when it dials plain HTTP).
func (t *Transport) Live() *tlsclient.Client { return t.client }

// Dial dials addr and runs the TLS handshake exactly as the transport's
// own dial does for a request (its DialTLSContext: the server name from
// tls_server_name or the address, the identity and trust current now,
// tlsclient.Client.Handshake and its classification), and returns the
// connection or the *tlsclient.HandshakeError. Nil when the transport
// dials plain HTTP.
func (t *Transport) Dial() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.client == nil {
		return nil
	}
	return t.dialTLS
}

// ServerName is the server name the transport sends and verifies the
// backend against ("": the upstream's host).
func (t *Transport) ServerName() string {
	if t.client == nil {
		return ""
	}
	return t.client.Config("").ServerName
}
