package passthrough

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// copyWrapper is a listener wrapper with one passthrough route for
// db.example.com to dial, the handler's extra JSON fields spliced in.
func copyWrapper(dial, extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return fmt.Sprintf(`{"routes":[{"match":[{"clienthello":{"sni":["db.example.com"]}}],`+
		`"handle":[{"handler":"passthrough","upstreams":[{"dial":%q}]%s}]}]}`, dial, extra)
}

// TestCopyOnThisHost: on loopback (the client and the upstream on this
// host) the default copy goes through a pooled buffer, not splice(2): with
// the data arriving at memory speed, Go's splice moves up to 1 MiB per
// system call and the proxy waits more than it works (W1 in
// docs/benchmarks.md). Each mode still moves every byte and counts it.
func TestCopyOnThisHost(t *testing.T) {
	const size = 300000
	for _, tc := range []struct {
		name, extra string
		splice      bool
	}{
		{"default", ``, false},
		{"auto", `"copy":"auto"`, false},
		{"buffered", `"copy":"buffered"`, false},
		{"splice", `"copy":"splice"`, true},
		{"splice with idle_timeout", `"copy":"splice","idle_timeout":60000000000`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := observeLogs(t)
			db := startBackend(t, "db.example.com", withEcho())
			f := startFront(t, copyWrapper(db.addr, tc.extra))
			c, _ := dialTLS(t, f.addr, "db.example.com", nil)
			echo(t, c, strings.Repeat("x", size))
			waitFor(t, "the joining line", func() bool { return len(logsWith(logs, "joining connections")) == 1 })
			if got := logsWith(logs, "joining connections")[0]["splice"]; got != tc.splice {
				t.Errorf("splice = %v, want %v", got, tc.splice)
			}
			c.Close()
			waitFor(t, "the log line", func() bool { return len(logsWith(logs, "passthrough connection")) == 1 })
			line := logsWith(logs, "passthrough connection")[0]
			// the TLS records around the payload make each count a little larger
			up, down := line["bytes_from_client"].(int64), line["bytes_to_client"].(int64)
			if up < size || down < size || up > size+4000 || down > size+8000 {
				t.Errorf("bytes_from_client %d, bytes_to_client %d: want a little over %d each", up, down, size)
			}
		})
	}
}

// TestUseSplice: "auto" splices only when neither peer is on this host
// (a loopback address or a Unix socket), never with an idle timeout.
func TestUseSplice(t *testing.T) {
	remote := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 50612}
	backend := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 5432}
	loop4 := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 443}
	loopMapped := &net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 443}
	loop6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 443}
	sock := &net.UnixAddr{Name: "/run/db.sock", Net: "unix"}
	for _, tc := range []struct {
		mode         string
		idle         time.Duration
		client, upst net.Addr
		want         bool
	}{
		{"", 0, remote, backend, true},
		{"auto", 0, remote, backend, true},
		{"auto", time.Minute, remote, backend, false},
		{"auto", 0, remote, loop4, false},
		{"auto", 0, loopMapped, backend, false},
		{"auto", 0, remote, loop6, false},
		{"auto", 0, remote, sock, false},
		{"auto", 0, nil, backend, true},
		{"buffered", 0, remote, backend, false},
		{"splice", 0, loop4, loop4, true},
		{"splice", time.Minute, remote, backend, false},
	} {
		got := useSplice(tc.mode, tc.idle, addrConn{remote: tc.client}, addrConn{remote: tc.upst})
		if got != tc.want {
			t.Errorf("useSplice(%q, %v, client %v, upstream %v) = %v, want %v", tc.mode, tc.idle, tc.client, tc.upst, got, tc.want)
		}
	}
}

func TestCopyModeRefused(t *testing.T) {
	h := &Handler{Copy: "zerocopy", Upstreams: []*Upstream{{Dial: "10.0.0.5:5432"}}}
	ctx, _ := newTestContext(t)
	err := h.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), `copy "zerocopy"`) || !strings.Contains(err.Error(), "auto, splice or buffered") {
		t.Fatalf("Provision: %v, want an error naming copy and its values", err)
	}
}

// addrConn is a net.Conn that only has a remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }
