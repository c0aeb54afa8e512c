// Package peer holds the verified peer identity, its patterns, and the
// matchers, verifier and forwarding handler built on them.
package peer
