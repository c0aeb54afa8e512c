package upstream

import "github.com/trustline/trustline/modules/tlsclient"

// Live is the transport's TLS client, for `caddy trustline explain` (nil
// when it dials plain HTTP). With it, the embedded http transport's
// DialTLSContext dials and runs the handshake exactly as for a request.
func (t *Transport) Live() *tlsclient.Client { return t.client }
