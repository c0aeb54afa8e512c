package passthrough

import (
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// Helpers that edit a real ClientHello, for the shapes no client library
// sends on request: a trailing dot in the server name, unknown versions.

// editHello returns hello (a ClientHello in one record, as goHello
// returns it) with the body of the extension of type typ replaced by
// body, the lengths around it fixed up. It fails the test when hello has
// no such extension.
func editHello(t testing.TB, hello []byte, typ uint16, body []byte) []byte {
	t.Helper()
	s := cryptobyte.String(hello[recordHeaderLen:])
	var msgType uint8
	var msg cryptobyte.String
	if !s.ReadUint8(&msgType) || msgType != handshakeTypeClientHello || !s.ReadUint24LengthPrefixed(&msg) {
		t.Fatal("editHello: not a ClientHello in one record")
	}
	rest := msg
	var sessionID, suites, compression cryptobyte.String
	if !rest.Skip(2+32) || !rest.ReadUint8LengthPrefixed(&sessionID) ||
		!rest.ReadUint16LengthPrefixed(&suites) || !rest.ReadUint8LengthPrefixed(&compression) {
		t.Fatal("editHello: truncated fixed fields")
	}
	fixed := msg[:len(msg)-len(rest)]
	var exts cryptobyte.String
	if !rest.ReadUint16LengthPrefixed(&exts) {
		t.Fatal("editHello: no extensions")
	}
	found := false
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8(recordTypeHandshake)
	b.AddBytes(hello[1:3])
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(handshakeTypeClientHello)
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddBytes(fixed)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for !exts.Empty() {
					var et uint16
					var eb cryptobyte.String
					if !exts.ReadUint16(&et) || !exts.ReadUint16LengthPrefixed(&eb) {
						t.Fatal("editHello: truncated extension")
					}
					if et == typ {
						found = true
						eb = body
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
		t.Fatalf("editHello: the ClientHello has no extension %d", typ)
	}
	return out
}

// withSNI puts name, byte for byte, in hello's server_name extension.
func withSNI(t testing.TB, hello []byte, name string) []byte {
	t.Helper()
	b := cryptobyte.NewBuilder(nil)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(0) // host_name
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
	})
	return editHello(t, hello, extServerName, b.BytesOrPanic())
}

// withVersions puts versions in hello's supported_versions extension.
func withVersions(t testing.TB, hello []byte, versions ...uint16) []byte {
	t.Helper()
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, v := range versions {
			b.AddUint16(v)
		}
	})
	return editHello(t, hello, extSupportedVersions, b.BytesOrPanic())
}
