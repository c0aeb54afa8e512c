// Package passthrough routes TLS connections by their ClientHello on layer 4:
// some names pass through untouched, the rest fall through to Caddy.
package passthrough
