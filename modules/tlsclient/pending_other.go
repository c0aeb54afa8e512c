//go:build !unix

package tlsclient

import "net"

// pending is not implemented here: a backend's refusal that arrives while
// net/http writes is then reported without its alert.
func pending(net.Conn) []byte { return nil }
