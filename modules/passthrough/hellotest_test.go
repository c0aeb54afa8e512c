package passthrough

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/hellotest"
)

// Helpers that make real ClientHellos for the tests: crypto/tls's, and
// openssl's when openssl is installed.

// manyALPN returns n distinct protocol names of about 12 bytes each.
func manyALPN(n int) []string {
	var protos []string
	for i := range n {
		protos = append(protos, "proto-"+strings.Repeat("x", 3)+"-"+itoa(i))
	}
	return append(protos, "http/1.1")
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for i > 0 {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
	}
	return string(b)
}

// reframe splits the handshake message carried by the single record in
// hello into records whose payloads have the given sizes (the last size
// repeats until the message is used up).
func reframe(t testing.TB, hello []byte, sizes ...int) []byte {
	t.Helper()
	if len(hello) < 5 || hello[0] != 22 {
		t.Fatal("reframe: not a handshake record")
	}
	return hellotest.Reframe(hello, sizes...)
}

// opensslHello captures the first flight of `openssl s_client` with args
// (appended to -connect and -servername). It skips when openssl is absent.
func opensslHello(t testing.TB, serverName string, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed")
		}
		t.Skip("openssl is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, raw, _ := ReadClientHello(c, nil)
		got <- raw
	}()
	cmdArgs := append([]string{"s_client", "-connect", ln.Addr().String(), "-servername", serverName}, args...)
	cmd := exec.Command(bin, cmdArgs...)
	cmd.Stdin = strings.NewReader("")
	done := make(chan struct{})
	go func() { _ = cmd.Run(); close(done) }()
	var raw []byte
	select {
	case raw = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("openssl sent no ClientHello within 15s")
	}
	<-done
	if len(raw) == 0 {
		t.Fatal("captured no bytes from openssl")
	}
	return raw
}

// oneByteConn serves data one byte per Read.
type oneByteReader struct{ data []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	p[0] = r.data[0]
	r.data = r.data[1:]
	return 1, nil
}

func isIncomplete(err error) bool { return errors.Is(err, errIncomplete) }
