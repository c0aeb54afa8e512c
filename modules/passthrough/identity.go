package passthrough

import (
	"crypto/tls"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	peerid "github.com/trustline/trustline/modules/peer"
)

// TLVSPIFFEID is the PROXY v2 TLV type carrying the client's SPIFFE ID
// (proxy_protocol_identity: README.md, "mTLS in, mTLS out, at layer 4").
const TLVSPIFFEID proxyproto.PP2Type = 0xE0

// clientName is the verified client for logs: its SPIFFE ID, else its CN.
func clientName(id *peerid.Identity) string {
	if id.SPIFFEID != "" {
		return id.SPIFFEID
	}
	return "CN=" + id.CommonName
}

// IdentityTLVs builds the TLVs of the PROXY v2 header
// (proxy_protocol_identity) for a terminated connection's state: the SSL
// TLV as HAProxy's send-proxy-v2-ssl-cn sends it, and TLVSPIFFEID. The
// identity comes only from the chain verified for this connection
// (peer.FromState); a certificate presented but not verified yields the
// SSL TLV with a non-zero verify field and nothing else.
func IdentityTLVs(cs *tls.ConnectionState) ([]proxyproto.TLV, error) {
	return tlvsFor(cs, peerid.FromState(cs))
}

// tlvsFor builds the TLVs of cs with id, its verified identity (nil: none).
func tlvsFor(cs *tls.ConnectionState, id *peerid.Identity) ([]proxyproto.TLV, error) {
	ssl := tlvparse.PP2SSL{Client: tlvparse.PP2_BITFIELD_CLIENT_SSL, Verify: 1}
	if len(cs.PeerCertificates) > 0 {
		ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS
		if !cs.DidResume {
			ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN
		}
	}
	ssl.TLV = append(ssl.TLV,
		proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_VERSION, Value: []byte(protoVersionName(cs.Version))},
		proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CIPHER, Value: []byte(tls.CipherSuiteName(cs.CipherSuite))},
	)
	var extra []proxyproto.TLV
	if id != nil {
		ssl.Verify = 0
		if id.CommonName != "" && utf8.ValidString(id.CommonName) { // a backend's parser drops the whole SSL TLV otherwise
			ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CN, Value: []byte(id.CommonName)})
		}
		ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CLIENT_CERT, Value: id.Raw})
		if id.SPIFFEID != "" {
			extra = append(extra, proxyproto.TLV{Type: TLVSPIFFEID, Value: []byte(id.SPIFFEID)})
		}
	}
	sslTLV, err := ssl.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding the SSL TLV: %w", err)
	}
	return append([]proxyproto.TLV{sslTLV}, extra...), nil
}

// protoVersionName names a TLS version as HAProxy's SSL TLV does:
// "TLSv1.2", and "TLSv1" for TLS 1.0.
func protoVersionName(v uint16) string {
	if name, ok := versionNames[v]; ok && v >= tls.VersionTLS10 {
		return strings.TrimSuffix("TLSv"+strings.TrimPrefix(name, "tls"), ".0")
	}
	return fmt.Sprintf("0x%04x", v)
}
