// Package truststore provides trust pool sources (whom do we trust) in Caddy's
// tls.ca_pool.source namespace, and a client-auth verifier that checks client
// chains against the live, hot-reloaded pool on every handshake.
package truststore
