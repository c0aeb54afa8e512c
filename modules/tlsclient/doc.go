// Package tlsclient is the client side of the suite's TLS connections to
// backends (transport mtls, the passthrough handler's re-encryption,
// storage redis): one handshake, identity, verification and failure
// reporting for all. See README.md.
package tlsclient
