package testpki

import (
	"bytes"
	"crypto/x509"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/pavlo-v-chernykh/keystore-go/v4"
	"software.sslmate.com/src/go-pkcs12"
)

func p12Encoder(legacy bool) *pkcs12.Encoder {
	if legacy {
		return pkcs12.LegacyRC2
	}
	return pkcs12.Modern2023
}

// PKCS12Keystore encodes leaf, its key and its chain as PKCS#12: modern
// (PBES2/AES-256, as Java 17+ keytool and OpenSSL 3 write) or legacy
// (RC2/3DES with a SHA-1 MAC).
func PKCS12Keystore(t testing.TB, l *Leaf, password string, legacy bool) []byte {
	t.Helper()
	return must(p12Encoder(legacy).Encode(l.Key, l.Cert, l.Chain, password))
}

// PKCS12Truststore encodes certificates as a Java-style PKCS#12 truststore
// (each a trusted-certificate entry).
func PKCS12Truststore(t testing.TB, certs []*x509.Certificate, password string, legacy bool) []byte {
	t.Helper()
	return must(p12Encoder(legacy).EncodeTrustStore(certs, password))
}

// JKSKeystore encodes leaf and its chain as a JKS keystore with one
// private-key entry under alias.
func JKSKeystore(t testing.TB, alias string, l *Leaf, storePass, keyPass string) []byte {
	t.Helper()
	ks := keystore.New()
	entry := keystore.PrivateKeyEntry{CreationTime: time.Now(), PrivateKey: must(x509.MarshalPKCS8PrivateKey(l.Key))}
	for _, c := range append([]*x509.Certificate{l.Cert}, l.Chain...) {
		entry.CertificateChain = append(entry.CertificateChain, keystore.Certificate{Type: "X509", Content: c.Raw})
	}
	if err := ks.SetPrivateKeyEntry(alias, entry, []byte(keyPass)); err != nil {
		t.Fatal(err)
	}
	return storeJKS(t, ks, storePass)
}

// JKSTruststore encodes certificates as trusted-certificate entries of a
// JKS truststore, one per alias.
func JKSTruststore(t testing.TB, certs map[string]*x509.Certificate, storePass string) []byte {
	t.Helper()
	ks := keystore.New()
	for _, a := range slices.Sorted(maps.Keys(certs)) {
		err := ks.SetTrustedCertificateEntry(a, keystore.TrustedCertificateEntry{
			CreationTime: time.Now(),
			Certificate:  keystore.Certificate{Type: "X509", Content: certs[a].Raw},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return storeJKS(t, ks, storePass)
}

func storeJKS(t testing.TB, ks keystore.KeyStore, pass string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := ks.Store(&buf, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
