package passthrough

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/trustline/trustline/internal/testpki"
)

func TestIdentityTLVs(t *testing.T) {
	leaf := testCA().Issue(t, testpki.CN("alice"), testpki.URI("spiffe://example.org/alice"), testpki.ClientOnly())
	two := testCA().Issue(t, testpki.CN("two-ids"), testpki.URI("spiffe://example.org/a", "spiffe://example.org/b"), testpki.ClientOnly())
	parse := func(t *testing.T, cs *tls.ConnectionState) (tlvparse.PP2SSL, string) {
		t.Helper()
		tlvs, err := IdentityTLVs(cs)
		if err != nil {
			t.Fatal(err)
		}
		// through a real header, as a backend reads it
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5000}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 443})
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Format(); err != nil {
			t.Fatal(err)
		}
		got, _ := h.TLVs()
		ssl, ok := tlvparse.FindSSL(got)
		if !ok {
			t.Fatal("no SSL TLV")
		}
		var spiffe string
		for _, tlv := range got {
			if tlv.Type == TLVSPIFFEID {
				spiffe = string(tlv.Value)
			}
		}
		return ssl, spiffe
	}

	t.Run("verified", func(t *testing.T) {
		ssl, spiffe := parse(t, &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256,
			PeerCertificates: []*x509.Certificate{leaf.Cert}, VerifiedChains: [][]*x509.Certificate{{leaf.Cert, testCA().Cert}}})
		cn, _ := ssl.ClientCN()
		der, _ := ssl.ClientCert()
		version, _ := ssl.SSLVersion()
		if !ssl.Verified() || !ssl.ClientSSL() || !ssl.ClientCertConn() || cn != "alice" || string(der) != string(leaf.Cert.Raw) ||
			version != "TLSv1.3" || spiffe != "spiffe://example.org/alice" {
			t.Fatalf("verified=%v ssl=%v conn=%v cn=%q der=%d version=%q spiffe=%q", ssl.Verified(), ssl.ClientSSL(), ssl.ClientCertConn(), cn, len(der), version, spiffe)
		}
	})
	t.Run("presented but not verified", func(t *testing.T) {
		ssl, spiffe := parse(t, &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{leaf.Cert}})
		if _, hasCN := ssl.ClientCN(); ssl.Verified() || hasCN || spiffe != "" {
			t.Fatalf("an unverified certificate leaked identity: verified=%v cn=%v spiffe=%q", ssl.Verified(), hasCN, spiffe)
		}
		if _, hasDER := ssl.ClientCert(); hasDER {
			t.Fatal("an unverified certificate's DER was sent")
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		ssl, _ := parse(t, &tls.ConnectionState{Version: tls.VersionTLS12})
		if ssl.Verified() || ssl.ClientCertConn() || ssl.ClientCertSess() || !ssl.ClientSSL() {
			t.Fatalf("flags %#x verify %d", ssl.Client, ssl.Verify)
		}
		if v, _ := ssl.SSLVersion(); v != "TLSv1.2" {
			t.Fatalf("version %q", v)
		}
	})
	t.Run("two URI SANs is no SPIFFE ID", func(t *testing.T) {
		_, spiffe := parse(t, &tls.ConnectionState{Version: tls.VersionTLS13,
			PeerCertificates: []*x509.Certificate{two.Cert}, VerifiedChains: [][]*x509.Certificate{{two.Cert}}})
		if spiffe != "" {
			t.Fatalf("SPIFFE ID %q from a certificate with two URI SANs", spiffe)
		}
	})
}
