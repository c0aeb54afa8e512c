package passthrough

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"unicode/utf8"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	peerid "github.com/trustline/trustline/modules/peer"
)

// FuzzIdentityTLVs: the PROXY v2 header the suite writes for a terminated
// connection carries whatever a certificate holds (a CN, a SPIFFE ID, the
// DER) and must read back, through go-proxyproto as a backend reads it,
// as exactly those values, or fail to build with an error; never a header
// that a backend would read differently.
func FuzzIdentityTLVs(f *testing.F) {
	f.Add("alice", "spiffe://example.org/alice", []byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Add("", "", []byte{})
	f.Add("a\x00b\r\nc", "spiffe://x/\xff", bytes.Repeat([]byte{0xE0}, 70000))
	f.Fuzz(func(t *testing.T, cn, spiffeID string, der []byte) {
		cs := &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256,
			PeerCertificates: []*x509.Certificate{{Raw: der}}}
		tlvs, err := tlvsFor(cs, &peerid.Identity{CommonName: cn, SPIFFEID: spiffeID, Raw: der})
		if err != nil {
			return
		}
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5000}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 443})
		if err := h.SetTLVs(tlvs); err != nil {
			return // too large for a PROXY v2 header: not sent
		}
		wire, err := h.Format()
		if err != nil {
			return
		}
		// go-proxyproto's reader refuses headers over 4 KiB by default, a
		// reader's policy (the README says so); read the whole 16-bit range
		proxyproto.MaxV2HeaderSize = 65535
		back, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(wire)))
		if err != nil {
			t.Fatalf("the header the suite wrote does not read back: %v", err)
		}
		got, err := back.TLVs()
		if err != nil {
			t.Fatalf("TLVs: %v", err)
		}
		ssl, ok := tlvparse.FindSSL(got)
		if !ok || !ssl.Verified() {
			t.Fatal("no verified SSL TLV")
		}
		gotCN, hasCN := ssl.ClientCN()
		wantCN := cn
		if !utf8.ValidString(cn) {
			wantCN = "" // not UTF-8: left out, or the backend would drop the SSL TLV
		}
		if (wantCN != "") != hasCN || gotCN != wantCN {
			t.Fatalf("CN %q read back as %q (%v)", cn, gotCN, hasCN)
		}
		if gotDER, _ := ssl.ClientCert(); !bytes.Equal(gotDER, der) {
			t.Fatalf("DER of %d bytes read back as %d bytes", len(der), len(gotDER))
		}
		var gotID string
		for _, tlv := range got {
			if tlv.Type == TLVSPIFFEID {
				gotID = string(tlv.Value)
			}
		}
		if gotID != spiffeID {
			t.Fatalf("SPIFFE ID %q read back as %q", spiffeID, gotID)
		}
	})
}
