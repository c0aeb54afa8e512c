package explain

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/passthrough"
	"github.com/trustline/trustline/modules/tlsclient"
	"github.com/trustline/trustline/modules/verify"
)

// forwarded reports a passthrough handler after a handler (by) ended TLS
// at layer 4: it forwards the decrypted stream, in plain TCP or
// re-encrypted, behind its PROXY header.
func (e *engine) forwarded(at, by string, h *passthrough.Handler, cs *tls.ConnectionState) {
	ups := upstreamAddrs(h)
	s := verify.Step{Stage: "upstream", Name: "passthrough", Verdict: verify.VerdictAdmitted}
	how := "in plain TCP: the backend reads the client's bytes decrypted, unencrypted on the wire"
	if h.TLS != nil {
		setup, err := e.upstreamClient(h.TLS)
		if err != nil {
			e.undetermined(verify.Step{Stage: "upstream", Name: "passthrough", Detail: "loading the handler's tls: " + err.Error()},
				"the passthrough handler's tls could not be loaded: "+err.Error())
			return
		}
		how = "re-encrypted, " + describeTLS("by the handler's tls", setup)
		s.Checks = setupChecks(setup)
	}
	s.Detail = fmt.Sprintf("TLS ended at %s; the passthrough handler of %s (route %q) forwards the decrypted stream to %s %s",
		by, at, cmp.Or(h.Route, "passthrough"), ups, how)
	s.Checks = append(s.Checks, proxyChecks(h, cs)...)
	e.add(s)
	e.rep.Verdict = Verdict{Outcome: OutcomeAdmitted,
		Summary: fmt.Sprintf("TLS terminated at layer 4 (%s) and forwarded to %s", by, ups)}
}

// upstreamClient loads and describes the passthrough handler's TLS
// client, in a context that joins the material in force.
func (e *engine) upstreamClient(t *passthrough.UpstreamTLS) (tlsclient.Setup, error) {
	ctx, cancel := caddy.NewContext(e.ctx)
	defer cancel()
	c, err := t.Load(material.JoinOnly(ctx))
	if err != nil {
		return tlsclient.Setup{}, err
	}
	return c.Describe(), nil
}

// upstreamAddrs lists the handler's upstreams.
func upstreamAddrs(h *passthrough.Handler) string {
	var ups []string
	for _, u := range h.Upstreams {
		ups = append(ups, u.Dial)
	}
	return strings.Join(ups, ", ")
}

// proxyChecks say what the PROXY header of the handler carries: the
// client's address, and after TLS ended at layer 4 (cs not nil) with
// proxy_protocol_identity, each TLV of the verified identity.
func proxyChecks(h *passthrough.Handler, cs *tls.ConnectionState) []verify.Check {
	switch h.ProxyProtocol {
	case "v1":
		return []verify.Check{{Name: "PROXY v1", Want: "header", Have: "the client's address and port", OK: true}}
	case "v2":
	default:
		return nil
	}
	header := verify.Check{Name: "PROXY v2", Want: "header", OK: true}
	switch {
	case cs == nil:
		header.Have = "the client's address and port; no identity TLV: TLS is not terminated before the handler, so there is no verified identity to send"
	case !h.ProxyProtocolIdentity:
		header.Have = "the client's address and port; no identity TLV: proxy_protocol_identity is off"
	default:
		header.Have = "the client's address and port, and the identity TLVs below"
	}
	if h.TLS != nil {
		header.Have += " (sent in clear, before the handshake with the backend)"
	}
	checks := []verify.Check{header}
	if cs == nil || !h.ProxyProtocolIdentity {
		return checks
	}
	tlvs, err := passthrough.IdentityTLVs(cs)
	if err != nil {
		return append(checks, verify.Check{Name: "TLVs", Want: "identity", Have: err.Error()})
	}
	return append(checks, describeTLVs(tlvs, cs)...)
}

// describeTLVs names each TLV and its value, the SSL TLV's sub-TLVs one
// by one.
func describeTLVs(tlvs []proxyproto.TLV, cs *tls.ConnectionState) []verify.Check {
	var checks []verify.Check
	for _, t := range tlvs {
		switch t.Type {
		case proxyproto.PP2_TYPE_SSL:
			ssl, err := tlvparse.SSL(t)
			if err != nil {
				checks = append(checks, verify.Check{Name: "TLV PP2_TYPE_SSL (0x20)", Want: "SSL", Have: err.Error()})
				continue
			}
			verified := "the certificate was verified"
			if ssl.Verify != 0 {
				verified = "no verified certificate"
			}
			checks = append(checks, verify.Check{Name: "TLV PP2_TYPE_SSL (0x20)", Want: "client, verify",
				Have: fmt.Sprintf("client 0x%02x (%s), verify %d (%s)", ssl.Client, clientFlags(ssl.Client), ssl.Verify, verified), OK: ssl.Verify == 0})
			for _, sub := range ssl.TLV {
				checks = append(checks, subTLV(sub, cs))
			}
		case passthrough.TLVSPIFFEID:
			checks = append(checks, verify.Check{Name: "TLV 0xE0 (SPIFFE ID)", Want: "the verified SPIFFE ID", Have: string(t.Value), OK: true})
		default:
			checks = append(checks, verify.Check{Name: fmt.Sprintf("TLV 0x%02x", byte(t.Type)), Want: "value", Have: fmt.Sprintf("%d bytes", len(t.Value)), OK: true})
		}
	}
	return checks
}

// subTLV describes a sub-TLV of the SSL TLV.
func subTLV(t proxyproto.TLV, cs *tls.ConnectionState) verify.Check {
	c := verify.Check{Want: "value", Have: string(t.Value), OK: true}
	switch t.Type {
	case proxyproto.PP2_SUBTYPE_SSL_VERSION:
		c.Name = "TLV PP2_SUBTYPE_SSL_VERSION (0x21)"
		c.Have += " (as explain assumes it negotiated; the client may offer less)"
	case proxyproto.PP2_SUBTYPE_SSL_CN:
		c.Name = "TLV PP2_SUBTYPE_SSL_CN (0x22)"
	case proxyproto.PP2_SUBTYPE_SSL_CIPHER:
		c.Name = "TLV PP2_SUBTYPE_SSL_CIPHER (0x23)"
		if cs.CipherSuite == 0 {
			c.Have = "the cipher suite the handshake negotiates"
		}
	case proxyproto.PP2_SUBTYPE_SSL_CLIENT_CERT:
		c.Name = "TLV PP2_SUBTYPE_SSL_CLIENT_CERT (0x28)"
		c.Have = fmt.Sprintf("%d bytes of DER", len(t.Value))
		if cert, err := x509.ParseCertificate(t.Value); err == nil {
			c.Have = fmt.Sprintf("%q serial %s (%d bytes of DER)", cert.Subject.String(), material.SerialString(cert), len(t.Value))
		}
	default:
		c.Name = fmt.Sprintf("TLV SSL sub-type 0x%02x", byte(t.Type))
	}
	return c
}

// clientFlags names the bits of the SSL TLV's client field.
func clientFlags(f uint8) string {
	var out []string
	for _, b := range []struct {
		bit  uint8
		name string
	}{
		{tlvparse.PP2_BITFIELD_CLIENT_SSL, "SSL"},
		{tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN, "certificate on this connection"},
		{tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS, "certificate in the session"},
	} {
		if f&b.bit != 0 {
			out = append(out, b.name)
		}
	}
	return strings.Join(out, ", ")
}
