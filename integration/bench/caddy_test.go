package bench

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestAdminRetriesWhenNoResponse: Caddy replaces its admin server at every
// config load, so a request can meet the closing one and get no response
// (a reset, EOF, a refused connection). The bench's admin client sends
// such a request again instead of failing the test; an answer, even an
// error status, is final.
func TestAdminRetriesWhenNoResponse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var loads atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		loads.Add(1)
		if r.URL.Path != "/load" {
			http.Error(w, "no such endpoint", http.StatusNotFound)
		}
	})}
	// the first connections are reset (SO_LINGER 0), as those queued on
	// the admin listener being closed are
	var resets atomic.Int32
	go func() { _ = srv.Serve(&resetFirst{Listener: ln, n: 2, resets: &resets}) }()
	t.Cleanup(func() { _ = srv.Close() })

	c := &Caddy{Admin: ln.Addr().String()}
	if err := c.LoadJSON(t, []byte(`{}`)); err != nil {
		t.Fatalf("a load whose first attempts got no response: %v", err)
	}
	if resets.Load() != 2 || loads.Load() != 1 {
		t.Fatalf("%d resets, %d loads served; want 2 and 1", resets.Load(), loads.Load())
	}
	if status, _ := c.AdminGet(t, "/nope"); status != http.StatusNotFound {
		t.Fatalf("GET /nope: %d", status)
	}
	if loads.Load() != 2 {
		t.Fatalf("an answered request was sent %d times", loads.Load()-1)
	}
}

type resetFirst struct {
	net.Listener
	n      int32
	resets *atomic.Int32
}

func (l *resetFirst) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.resets.Load() >= l.n {
			return c, err
		}
		l.resets.Add(1)
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	}
}
