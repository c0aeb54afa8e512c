package material

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/trustline/trustline/internal/testpki"
)

// cheapCount is the iteration count the test stores are written with; its
// DER (INTEGER 65536) has the same length as hugeCount's, so one can
// replace the other without re-encoding the store.
var (
	cheapCount = []byte{0x02, 0x03, 0x01, 0x00, 0x00}
	hugeCount  = []byte{0x02, 0x03, 0x7f, 0xff, 0xff} // 8,388,607
)

// TestPKCS12IterationCap: a store whose MAC, encrypted content or
// shrouded key asks for more iterations than MaxPKCS12Iterations is
// refused, naming the count and the cap, before anything is derived (on
// e03d3cc each took seconds, then failed the MAC); the same store with its
// own counts reads.
func TestPKCS12IterationCap(t *testing.T) {
	root := testpki.NewCA(t, "root")
	leaf := root.Issue(t, testpki.CN("me"))
	for _, tc := range []struct {
		name string
		enc  *pkcs12.Encoder
	}{
		{"modern (PBES2, PBKDF2)", pkcs12.Modern2023},
		{"legacy (PKCS#12 PBE)", pkcs12.LegacyDES},
	} {
		enc := tc.enc.WithIterations(65536)
		keystore, err := enc.Encode(leaf.Key, leaf.Cert, nil, "pw")
		if err != nil {
			t.Fatal(err)
		}
		truststore, err := enc.EncodeTrustStore([]*x509.Certificate{root.Cert}, "pw")
		if err != nil {
			t.Fatal(err)
		}
		for _, store := range []struct {
			name string
			data []byte
			read func([]byte) error
		}{
			{"keystore", keystore, func(d []byte) error { _, err := ReadKeyStore(d, StoreOptions{Password: "pw"}); return err }},
			{"truststore", truststore, func(d []byte) error { _, err := ReadTrustAnchors(d, StoreOptions{Password: "pw"}); return err }},
		} {
			if err := store.read(store.data); err != nil {
				t.Fatalf("%s %s with its own counts: %v", tc.name, store.name, err)
			}
			// each count of the store in turn (MAC, contents, key)
			places := bytes.Count(store.data, cheapCount)
			if places < 2 {
				t.Fatalf("%s %s: %d iteration counts found", tc.name, store.name, places)
			}
			for i := range places {
				t.Run(tc.name+" "+store.name+" count "+string(rune('1'+i)), func(t *testing.T) {
					data := replaceNth(store.data, cheapCount, hugeCount, i)
					start := time.Now()
					err := store.read(data)
					if err == nil || !strings.Contains(err.Error(), "iteration count 8388607 exceeds the cap of 1000000") {
						t.Fatalf("error %v (after %v), want the cap", err, time.Since(start))
					}
				})
			}
		}
	}
}

func replaceNth(data, old, new []byte, n int) []byte {
	out := append([]byte(nil), data...)
	at := 0
	for range n {
		at += bytes.Index(out[at:], old) + 1
	}
	at += bytes.Index(out[at:], old)
	copy(out[at:], new)
	return out
}

// TestJKSHostileLengths: a JKS store that states lengths or counts larger
// than the file is refused without allocating them (keystore-go makes a
// buffer of every stated length before reading it: 4 GiB on e03d3cc).
func TestJKSHostileLengths(t *testing.T) {
	root := testpki.NewCA(t, "root")
	leaf := root.Issue(t, testpki.CN("me"))
	good := testpki.JKSKeystore(t, "me", leaf, "changeit", "changeit")
	if _, err := ReadKeyStore(good, StoreOptions{Password: "changeit"}); err != nil {
		t.Fatal(err)
	}
	// header (magic, version, 1 entry), tag 1, alias "me", timestamp,
	// then the key's length
	keyLen := 12 + 4 + 2 + 2 + 8
	hostile := append([]byte(nil), good[:keyLen+4]...)
	binary.BigEndian.PutUint32(hostile[keyLen:], 0xFFFFFFF0)
	trust := testpki.JKSTruststore(t, map[string]*x509.Certificate{"ca": root.Cert}, "changeit")
	certLen := 12 + 4 + 2 + 2 + 8 + 2 + 4 // ..., then "X509", then its length
	hostileTrust := append([]byte(nil), trust...)
	binary.BigEndian.PutUint32(hostileTrust[certLen:], 0xFFFFFFF0)
	for name, tc := range map[string]struct {
		data []byte
		read func([]byte, StoreOptions) error
	}{
		"private key length": {hostile, func(d []byte, o StoreOptions) error { _, err := ReadKeyStore(d, o); return err }},
		"certificate length": {hostileTrust, func(d []byte, o StoreOptions) error { _, err := ReadTrustAnchors(d, o); return err }},
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := tc.read(tc.data, StoreOptions{Password: "changeit"})
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("accepted")
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
				t.Fatalf("allocated %d MiB for a %d-byte store (error %v)", n>>20, len(tc.data), err)
			}
		})
	}
}

// FuzzReadKeyStore feeds keystores (PKCS#12, JKS, a PEM certificate file
// with key) through the identity readers, with the iteration cap and the
// JKS bounds in force; seeds include stores at 65,536 iterations and with
// a count above the cap.
func FuzzReadKeyStore(f *testing.F) {
	root := testpki.NewCA(f, "root")
	leaf := root.Issue(f, testpki.CN("me"))
	for _, enc := range []*pkcs12.Encoder{pkcs12.Modern2023, pkcs12.LegacyDES} {
		p12, err := enc.WithIterations(65536).Encode(leaf.Key, leaf.Cert, nil, "pw")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p12, "pw", []byte(nil))
		f.Add(replaceNth(p12, cheapCount, hugeCount, 0), "pw", []byte(nil))
	}
	f.Add(testpki.PKCS12Keystore(f, leaf, "pw", false), "pw", []byte(nil))
	f.Add(testpki.JKSKeystore(f, "me", leaf, "changeit", "changeit"), "changeit", []byte(nil))
	f.Add(leaf.CertPEM(), "", leaf.KeyPEM())
	f.Fuzz(func(t *testing.T, data []byte, password string, keyPEM []byte) {
		var id *tls.Certificate
		var err error
		if format, _ := DetectFormat(data); format == FormatPEM {
			id, err = ReadPEMKeyPair(data, keyPEM)
		} else {
			id, err = ReadKeyStore(data, StoreOptions{Password: password})
		}
		if err == nil && (id == nil || id.Leaf == nil || id.PrivateKey == nil) {
			t.Fatal("no error and no identity")
		}
	})
}
