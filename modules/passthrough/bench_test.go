package passthrough

import (
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/trustline/trustline/internal/hellotest"
)

// BenchmarkProxyThroughput streams 64 MiB per op from a backend to a
// client through the listener wrapper: the suite's handler (its default
// copy, buffered on loopback, and "copy":"splice") against caddy-l4's
// proxy handler. The backend reads the ClientHello and then
// sends raw bytes (the proxy never looks past the ClientHello).
func BenchmarkProxyThroughput(b *testing.B) {
	const size = 64 << 20
	hello := hellotest.Go(b, &tls.Config{ServerName: "db.example.com"})
	for _, impl := range []string{"caddy-l4", "suite", "suite-splice"} {
		b.Run(impl, func(b *testing.B) {
			t := &testing.T{}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				buf := make([]byte, 256<<10)
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
							return
						}
						for sent := 0; sent < size; sent += len(buf) {
							if _, err := c.Write(buf); err != nil {
								return
							}
						}
					}()
				}
			}()
			wrapper := copyWrapper(ln.Addr().String(), "")
			switch impl {
			case "caddy-l4":
				wrapper = plainWrapper("db.example.com", ln.Addr().String(), "")
			case "suite-splice":
				wrapper = copyWrapper(ln.Addr().String(), `"copy":"splice"`)
			}
			f := startFront(t, wrapper)
			defer f.unload()
			buf := make([]byte, 256<<10)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				c, err := net.Dial("tcp", f.addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(hello); err != nil {
					b.Fatal(err)
				}
				var got int
				for got < size {
					n, err := c.Read(buf)
					got += n
					if err != nil {
						break
					}
				}
				c.Close()
				if got != size {
					b.Fatalf("read %d of %d bytes", got, size)
				}
			}
		})
	}
}
