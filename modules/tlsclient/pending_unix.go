//go:build unix

package tlsclient

import (
	"net"
	"syscall"
)

// pending returns what the peer has sent on conn and nobody has read yet,
// with one read that never waits (nothing when conn is not a socket). It
// reads under Control, not RawConn.Read: a Read blocked on conn holds the
// read lock that RawConn.Read takes, and crypto/tls closes the connection
// under its own blocked handshake read to end a canceled handshake. Go's
// sockets are non-blocking: the read returns at once, with or without
// bytes.
func pending(conn net.Conn) []byte {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var out []byte
	_ = raw.Control(func(fd uintptr) {
		buf := make([]byte, 4096)
		if n, err := syscall.Read(int(fd), buf); err == nil && n > 0 {
			out = buf[:n]
		}
	})
	return out
}
