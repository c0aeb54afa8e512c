// Package hellotest makes and edits real TLS ClientHellos for tests: the
// first flight crypto/tls sends, re-framed into records of any size, or
// with an extension rewritten for the shapes no client library sends on
// request (a trailing dot in the server name, unknown versions).
package hellotest

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// The extensions the helpers rewrite.
const (
	ExtServerName        uint16 = 0
	ExtSupportedVersions uint16 = 43
)

// Conn is a net.Conn that records what is written to it and fails its
// reads, so a client handshake over it stops right after sending the
// ClientHello.
type Conn struct{ bytes.Buffer }

func (c *Conn) Read([]byte) (int, error) { return 0, io.EOF }
func (c *Conn) Close() error             { return nil }
func (c *Conn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}
func (c *Conn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2}
}
func (c *Conn) SetDeadline(time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// Go returns the bytes crypto/tls sends as its first flight with cfg: its
// ClientHello, in one record.
func Go(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := new(Conn)
	_ = tls.Client(c, cfg).Handshake()
	if c.Len() == 0 {
		t.Fatal("crypto/tls wrote no ClientHello")
	}
	return c.Bytes()
}

// Reframe splits the handshake message carried by the single record in
// hello into records whose payloads have the given sizes (the last size
// repeats until the message is used up).
func Reframe(hello []byte, sizes ...int) []byte {
	n := int(hello[3])<<8 | int(hello[4])
	msg := hello[5 : 5+n]
	var out []byte
	for i := 0; len(msg) > 0; i++ {
		size := min(sizes[min(i, len(sizes)-1)], len(msg))
		out = append(out, 22, hello[1], hello[2], byte(size>>8), byte(size))
		out = append(out, msg[:size]...)
		msg = msg[size:]
	}
	return out
}

// EditExtension returns hello (a ClientHello in one record) with the body
// of the extension of type typ replaced by body, the lengths around it
// fixed up. It fails the test when hello has no such extension.
func EditExtension(t testing.TB, hello []byte, typ uint16, body []byte) []byte {
	t.Helper()
	if len(hello) < 5 || hello[0] != 22 {
		t.Fatal("EditExtension: not a handshake record")
	}
	s := cryptobyte.String(hello[5:])
	var msgType uint8
	var msg cryptobyte.String
	if !s.ReadUint8(&msgType) || msgType != 1 || !s.ReadUint24LengthPrefixed(&msg) {
		t.Fatal("EditExtension: not a ClientHello in one record")
	}
	rest := msg
	var sessionID, suites, compression, exts cryptobyte.String
	if !rest.Skip(2+32) || !rest.ReadUint8LengthPrefixed(&sessionID) || !rest.ReadUint16LengthPrefixed(&suites) ||
		!rest.ReadUint8LengthPrefixed(&compression) {
		t.Fatal("EditExtension: truncated ClientHello")
	}
	fixed := msg[:len(msg)-len(rest)]
	if !rest.ReadUint16LengthPrefixed(&exts) {
		t.Fatal("EditExtension: no extensions")
	}
	found := false
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8(22)
	b.AddBytes(hello[1:3])
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(1)
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddBytes(fixed)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for !exts.Empty() {
					var et uint16
					var eb cryptobyte.String
					if !exts.ReadUint16(&et) || !exts.ReadUint16LengthPrefixed(&eb) {
						t.Fatal("EditExtension: truncated extension")
					}
					if et == typ {
						found, eb = true, body
					}
					b.AddUint16(et)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(eb) })
				}
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("EditExtension: the ClientHello has no extension %d", typ)
	}
	return out
}

// WithSNI puts name, byte for byte (crypto/tls itself strips a trailing
// dot), in hello's server_name extension.
func WithSNI(t testing.TB, hello []byte, name string) []byte {
	t.Helper()
	b := cryptobyte.NewBuilder(nil)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(0) // host_name
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
	})
	return EditExtension(t, hello, ExtServerName, b.BytesOrPanic())
}

// WithVersions puts versions in hello's supported_versions extension.
func WithVersions(t testing.TB, hello []byte, versions ...uint16) []byte {
	t.Helper()
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, v := range versions {
			b.AddUint16(v)
		}
	})
	return EditExtension(t, hello, ExtSupportedVersions, b.BytesOrPanic())
}
