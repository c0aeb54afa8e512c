//go:build unix

package upstream

import (
	"net"
	"syscall"
)

// pending returns what the peer has sent on conn and nobody has read yet,
// with one non-blocking read (nothing when conn is not a socket).
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
	_ = raw.Read(func(fd uintptr) bool {
		buf := make([]byte, 4096)
		if n, err := syscall.Read(int(fd), buf); err == nil && n > 0 {
			out = buf[:n]
		}
		return true // one attempt, never wait
	})
	return out
}
