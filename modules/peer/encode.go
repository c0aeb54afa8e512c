package peer

import (
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
)

// ClientCertValue is the RFC 9440 Client-Cert header value: the leaf's DER
// as a structured-field byte sequence (":" base64 ":").
func (id *Identity) ClientCertValue() string {
	id.lazy.certOnce.Do(func() { id.lazy.clientCert = sfBinary(id.Raw) })
	return id.lazy.clientCert
}

// ClientCertChainValue is the RFC 9440 Client-Cert-Chain header value: the
// rest of the verified chain (issuer of the leaf first, trust anchor last)
// as a structured-field list of byte sequences; empty for a leaf issued
// directly by a trust anchor that is not in the chain.
func (id *Identity) ClientCertChainValue() string {
	id.lazy.chainOnce.Do(func() {
		items := make([]string, len(id.Chain))
		for i, c := range id.Chain {
			items[i] = sfBinary(c)
		}
		id.lazy.clientCertChain = strings.Join(items, ", ")
	})
	return id.lazy.clientCertChain
}

// PEMEscaped is the leaf as PEM, percent-encoded (every byte outside
// RFC 3986's unreserved set, so "+", "/", "=" and newlines too), the form
// of nginx's $ssl_client_escaped_cert and Envoy's XFCC Cert element.
func (id *Identity) PEMEscaped() string {
	id.lazy.pemOnce.Do(func() { id.lazy.pemEscaped = percentEncode(pemOf(id.Raw)) })
	return id.lazy.pemEscaped
}

// chainPEMEscaped is the verified chain after the leaf, as escaped PEM.
func (id *Identity) chainPEMEscaped() string {
	var b []byte
	for _, c := range id.Chain {
		b = append(b, pemOf(c)...)
	}
	return percentEncode(b)
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func sfBinary(b []byte) string {
	return ":" + base64.StdEncoding.EncodeToString(b) + ":"
}

// percentEncode escapes every byte outside RFC 3986's unreserved set.
// (url.QueryEscape does, but writes a space as "+", and every "+" as "%2B".)
func percentEncode(b []byte) string {
	return strings.ReplaceAll(url.QueryEscape(string(b)), "+", "%20")
}

// isControl reports whether r is an ASCII control character (HTAB
// included: a tab at either end of a header value is trimmed by parsers)
// or DEL: none fits in a header value as it is.
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func hasControl(s string) bool { return strings.ContainsFunc(s, isControl) }

// escapeControls writes every control character of s as esc and two hex
// digits, so that s fits in a header value: "\" gives the subject DN RFC
// 4514 escapes ("\0A"; Go prints its values as they are, and a CA may have
// signed a CN with a line break, but escapes every "\" of them, so the
// result is unambiguous), "%" a SAN percent-escapes (Go accepts any ASCII
// in a DNS SAN).
func escapeControls(s string, esc byte) string {
	if !hasControl(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; isControl(rune(c)) {
			fmt.Fprintf(&b, "%c%02X", esc, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
