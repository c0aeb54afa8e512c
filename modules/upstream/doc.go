// Package upstream provides the reverse_proxy transport that presents a
// client identity to backends and verifies them against a live trust pool.
package upstream
