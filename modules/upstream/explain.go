package upstream

import (
	"context"
	"net"

	"github.com/trustline/trustline/modules/tlsclient"
)

// Live is the transport's TLS client, for `caddy trustline explain` (nil
// when it dials plain HTTP).
func (t *Transport) Live() *tlsclient.Client { return t.client }

// Dial dials addr and runs the TLS handshake exactly as the transport does
// for a request, and returns the connection or the
// *tlsclient.HandshakeError. Nil when the transport dials plain HTTP.
func (t *Transport) Dial() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.client == nil {
		return nil
	}
	return t.dialTLS
}
