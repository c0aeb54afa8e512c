// Command goproxy is the least a Go TCP proxy can do per connection:
// accept, dial the upstream, copy both ways with io.Copy (a splice in the
// kernel between two *net.TCPConn) and half-close each side at its end of
// stream. No routing, no logs, no metrics.
//
// scripts/bench-passthrough.sh runs it as the "go-floor" path: what any
// passthrough written in Go with the standard library's goroutine-per-
// connection model costs on this machine, so that the suite's numbers can
// be read as "Go's floor" plus "the suite's own work".
//
// Usage: goproxy LISTEN=UPSTREAM [LISTEN=UPSTREAM...]
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goproxy LISTEN=UPSTREAM [LISTEN=UPSTREAM...]")
		os.Exit(2)
	}
	for _, arg := range os.Args[1:] {
		listen, upstream, ok := strings.Cut(arg, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "goproxy: %q is not LISTEN=UPSTREAM\n", arg)
			os.Exit(2)
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goproxy:", err)
			os.Exit(1)
		}
		go serve(ln, upstream)
	}
	select {}
}

func serve(ln net.Listener, upstream string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "goproxy: accept:", err)
			continue
		}
		go proxy(c.(*net.TCPConn), upstream)
	}
}

func proxy(down *net.TCPConn, upstream string) {
	defer down.Close()
	c, err := net.Dial("tcp", upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, "goproxy: dial:", err)
		return
	}
	up := c.(*net.TCPConn)
	defer up.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, down)
		_ = up.CloseWrite()
	}()
	_, _ = io.Copy(down, up)
	_ = down.CloseWrite()
	<-done
}
