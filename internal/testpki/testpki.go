// Package testpki is the suite's one in-memory test CA: roots,
// intermediates and leaves (P-256, short validity) with DNS, URI (SPIFFE),
// email and IP SANs, client/server EKU, and expired or not-yet-valid
// variants, written as PEM, PKCS#12 (modern and legacy encryption) and JKS.
// Nothing it makes is a secret that matters.
package testpki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// Option changes the certificate template before it is signed.
type Option func(*x509.Certificate)

// CN sets the subject common name.
func CN(cn string) Option { return func(c *x509.Certificate) { c.Subject.CommonName = cn } }

// Org sets the subject organization(s).
func Org(o ...string) Option { return func(c *x509.Certificate) { c.Subject.Organization = o } }

// OU sets the subject organizational unit(s).
func OU(ou ...string) Option {
	return func(c *x509.Certificate) { c.Subject.OrganizationalUnit = ou }
}

// DNS adds DNS SANs.
func DNS(names ...string) Option {
	return func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, names...) }
}

// URI adds URI SANs (for example a SPIFFE ID); it panics on a bad URI.
func URI(uris ...string) Option {
	return func(c *x509.Certificate) {
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				panic(err)
			}
			c.URIs = append(c.URIs, u)
		}
	}
}

// Email adds email SANs.
func Email(addrs ...string) Option {
	return func(c *x509.Certificate) { c.EmailAddresses = append(c.EmailAddresses, addrs...) }
}

// IP adds IP SANs.
func IP(ips ...string) Option {
	return func(c *x509.Certificate) {
		for _, s := range ips {
			c.IPAddresses = append(c.IPAddresses, net.ParseIP(s))
		}
	}
}

// OCSPServer adds OCSP responder URLs to the authority information access
// extension.
func OCSPServer(urls ...string) Option {
	return func(c *x509.Certificate) { c.OCSPServer = append(c.OCSPServer, urls...) }
}

// ClientOnly gives a leaf only the clientAuth extended key usage.
func ClientOnly() Option { return EKU(x509.ExtKeyUsageClientAuth) }

// ServerOnly gives a leaf only the serverAuth extended key usage.
func ServerOnly() Option { return EKU(x509.ExtKeyUsageServerAuth) }

// EKU sets the extended key usages.
func EKU(usages ...x509.ExtKeyUsage) Option {
	return func(c *x509.Certificate) { c.ExtKeyUsage = usages }
}

// Validity sets the validity window.
func Validity(notBefore, notAfter time.Time) Option {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// Expired makes a certificate that expired an hour ago.
func Expired() Option {
	return Validity(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
}

// NotYetValid makes a certificate valid from tomorrow.
func NotYetValid() Option {
	return Validity(time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour))
}

// CA is a certificate authority: a root or an intermediate.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain is Cert followed by its issuers up to the root.
	Chain []*x509.Certificate
}

// Leaf is an end-entity certificate with its key and its intermediates.
type Leaf struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain holds the intermediates between Cert and the root (not the root).
	Chain []*x509.Certificate
}

var serial atomic.Int64

func init() { serial.Store(time.Now().UnixNano()) }

// issue makes a key and a certificate for it from tmpl (after opts), signed
// by parent (nil: self-signed); it gives tmpl a fresh serial number and
// validity from an hour ago.
func issue(t testing.TB, tmpl *x509.Certificate, opts []Option, parent *CA) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl.SerialNumber, tmpl.NotBefore = big.NewInt(serial.Add(1)), time.Now().Add(-time.Hour)
	for _, o := range opts {
		o(tmpl)
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err) // a test's options can make a template crypto/x509 refuses
	}
	return must(x509.ParseCertificate(der)), key
}

// must returns v, or panics on err: for the errors crypto and the store
// encoders return only on a bug here.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// newCA makes a CA valid for a week, signed by parent (nil: a root).
func newCA(t testing.TB, cn string, opts []Option, parent *CA) *CA {
	t.Helper()
	cert, key := issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, opts, parent)
	ca := &CA{Cert: cert, Key: key, Chain: []*x509.Certificate{cert}}
	if parent != nil {
		ca.Chain = append(ca.Chain, parent.Chain...)
	}
	return ca
}

// NewCA makes a self-signed root CA.
func NewCA(t testing.TB, cn string, opts ...Option) *CA {
	t.Helper()
	return newCA(t, cn, opts, nil)
}

// NewIntermediate makes an intermediate CA signed by ca.
func (ca *CA) NewIntermediate(t testing.TB, cn string, opts ...Option) *CA {
	t.Helper()
	return newCA(t, cn, opts, ca)
}

// Issue makes a leaf signed by ca. By default it is valid for a day from an
// hour ago, with both the serverAuth and clientAuth usages, and CN "leaf".
func (ca *CA) Issue(t testing.TB, opts ...Option) *Leaf {
	t.Helper()
	cert, key := issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "leaf"},
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, opts, ca)
	// the leaf's chain: the intermediates, i.e. ca.Chain without the root
	return &Leaf{Cert: cert, Key: key, Chain: slices.Clone(ca.Chain[:len(ca.Chain)-1])}
}

// Root is the self-signed root at the end of ca's chain.
func (ca *CA) Root() *x509.Certificate { return ca.Chain[len(ca.Chain)-1] }

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte { return CertsPEM(ca.Cert) }

// Pool is a pool holding only the root of ca's chain.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root())
	return p
}

// CertPEM is the leaf followed by its intermediates, in PEM.
func (l *Leaf) CertPEM() []byte { return CertsPEM(append([]*x509.Certificate{l.Cert}, l.Chain...)...) }

// KeyPEM is the private key in PKCS#8 PEM.
func (l *Leaf) KeyPEM() []byte { return KeyPEM(l.Key) }

// TLS is the leaf as a tls.Certificate, chain included.
func (l *Leaf) TLS() tls.Certificate {
	c := tls.Certificate{PrivateKey: l.Key, Leaf: l.Cert, Certificate: [][]byte{l.Cert.Raw}}
	for _, ic := range l.Chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// WriteFiles writes name.crt (leaf + chain) and name.key into dir.
func (l *Leaf) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	return WriteFile(t, dir, name+".crt", l.CertPEM()), WriteFile(t, dir, name+".key", l.KeyPEM())
}

// CertsPEM encodes certificates as concatenated PEM blocks.
func CertsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a key as PKCS#8 PEM.
func KeyPEM(key *ecdsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(key))})
}

// WriteFile writes data to dir/name (creating dir) and returns the path.
// It writes through a temporary file and a rename, as deploy tools do, so a
// watcher never sees a half-written file.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// ParseCA reads a CA certificate (its chain may follow) and its ECDSA key
// from PEM, for example the root or intermediate Caddy's pki app stored.
func ParseCA(t testing.TB, certPEM, keyPEM []byte) *CA {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	chain, err := x509.ParseCertificates(bytes.Join(pair.Certificate, nil))
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("ParseCA: key is %T, not ECDSA", pair.PrivateKey)
	}
	return &CA{Cert: chain[0], Key: key, Chain: chain}
}
