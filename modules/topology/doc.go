// Package topology reports where TLS ends in a Caddy config and which
// certificates are in play, with findings and expiry gauges.
package topology
