// Package tlsclient is the client side of the suite's TLS connections to
// backends, shared by the mtls reverse_proxy transport, the passthrough
// handler's re-encryption and storage redis: the client identity current
// at each handshake (a keystore), the backend verified against the trust
// pool's current version (modules/verify), and failures classified,
// counted and logged alike. Client.Handshake is the one handshake, and
// the entry point of a check made on demand. See README.md.
package tlsclient
