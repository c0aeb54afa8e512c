package explain

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/trustline/trustline/modules/peer"
	"github.com/trustline/trustline/modules/truststore"
	"github.com/trustline/trustline/modules/verify"
)

// The TLS alerts a client sees, as crypto/tls names them.
const (
	alertCertificateRequired = "certificate required"
	alertHandshakeFailure    = "handshake failure"
	alertUnknownCA           = "unknown certificate authority"
	alertCertificateExpired  = "expired certificate"
	alertBadCertificate      = "bad certificate"
	alertUnsupportedCert     = "unsupported certificate"
	alertInternalError       = "internal error"
)

// handshake runs the server side of the handshake with policies (of names
// their holder): the policy Caddy's GetConfigForClient picks, and its
// tls.Config's client_auth settings and verifiers, run as they would (of
// crypto/tls only clientCertificate is emulated). It returns the
// connection state, or nil when the handshake is refused (verdict set).
func (e *engine) handshake(policies caddytls.ConnectionPolicies, of string) *tls.ConnectionState {
	base := policies.TLSConfig(e.ctx)
	hello := &tls.ClientHelloInfo{
		ServerName:        e.req.ServerName,
		SupportedProtos:   e.req.ALPN,
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		Conn:              e.conn(e.local, nil), // for policy matchers that read its addresses
	}
	cfg, err := base.GetConfigForClient(hello)
	if err != nil || cfg == nil {
		if err == nil {
			err = errors.New("no TLS configuration")
		}
		e.add(verify.Step{Stage: "tls", Name: "connection policy", Verdict: verify.VerdictRefused, Reason: verify.ReasonOther,
			Detail: fmt.Sprintf("no TLS connection policy of %s takes %s: %v", of, e.req.ServerName, err)})
		e.refuseHandshake(alertInternalError, verify.ReasonOther, "no TLS connection policy takes the server name: the server ends the handshake")
		return nil
	}
	index := slices.IndexFunc(policies, func(p *caddytls.ConnectionPolicy) bool { return p.TLSConfig == cfg })
	e.info("tls", "connection policy", fmt.Sprintf("TLS is terminated here, by connection policy #%d of %s (the first whose matchers take %s): %s", index, of, e.req.ServerName, describeClientAuth(cfg)))

	version := uint16(tls.VersionTLS13)
	if cfg.MaxVersion != 0 && cfg.MaxVersion < tls.VersionTLS13 {
		version = tls.VersionTLS12
	}
	certs := e.req.certs
	if cfg.ClientAuth == tls.NoClientCert {
		if len(certs) > 0 {
			e.info("tls", "crypto/tls", "the server asks for no client certificate (no client_auth): the client's certificate is not sent, and nothing verifies it")
		}
		certs = nil
	}
	state := &tls.ConnectionState{
		Version:            version,
		ServerName:         e.req.ServerName,
		PeerCertificates:   certs,
		NegotiatedProtocol: negotiate(cfg.NextProtos, e.req.ALPN),
	}
	if len(certs) > 0 {
		// the verifiers tell their steps to this trace, keyed by the
		// leaf's buffer as a handshake's record is
		e.trace = new(verify.Trace)
		defer verify.AttachTrace(certs[0].Raw, e.trace)()
	}
	alert, reason, err := e.clientCertificate(cfg, version, state)
	if e.trace != nil {
		e.rep.Steps = append(e.rep.Steps, e.trace.Steps()...)
		e.trace = nil
	}
	if err != nil {
		e.refuseHandshake(alert, reason, e.refusalSummary(err))
		return nil
	}
	state.HandshakeComplete = true
	e.add(identityStep(state))
	return state
}

// clientCertificate does what crypto/tls does with the client's
// certificate on the server side, then calls the config's callbacks as a
// handshake does. It follows Go 1.26's crypto/tls: handshake_server.go's
// processCertsFromClient (the mode's requirement, certs[0].Verify against
// ClientCAs for the clientAuth usage, the public key type,
// VerifyPeerCertificate, each with its alert), then VerifyConnection
// (handshake_server_tls13.go, handshake_server.go for TLS 1.2). The alert
// is the one the client sees, reason its class (verify's Reason constants).
func (e *engine) clientCertificate(cfg *tls.Config, version uint16, cs *tls.ConnectionState) (alert, reason string, err error) {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		if cfg.ClientAuth == tls.RequireAnyClientCert || cfg.ClientAuth == tls.RequireAndVerifyClientCert {
			alert = alertCertificateRequired
			if version != tls.VersionTLS13 {
				alert = alertHandshakeFailure
			}
			e.add(verify.Step{Stage: "chain", Name: "crypto/tls", Verdict: verify.VerdictRefused, Reason: verify.ReasonNoCertificate,
				Detail: "no certificate sent, and client_auth mode " + truststore.ModeName(cfg.ClientAuth) + " requires one"})
			return alert, verify.ReasonNoCertificate, errors.New("tls: client didn't provide a certificate")
		}
		if cfg.ClientAuth != tls.NoClientCert {
			e.info("chain", "crypto/tls", "no certificate sent; client_auth mode "+truststore.ModeName(cfg.ClientAuth)+" lets a client without one in (Caddy runs no verifier then): no verified identity")
		}
	}
	now := time.Now()
	if cfg.Time != nil {
		now = cfg.Time()
	}
	if cfg.ClientAuth >= tls.VerifyClientCertIfGiven && len(certs) > 0 {
		opts := x509.VerifyOptions{
			Roots:         cfg.ClientCAs,
			CurrentTime:   now,
			Intermediates: x509.NewCertPool(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
		chains, verr := certs[0].Verify(opts)
		var built []*x509.Certificate
		if verr == nil {
			built = chains[0]
		}
		e.add(verify.ChainStep("crypto/tls", certs[0], certs[1:], poolCerts(cfg.ClientCAs), callerPool, built, "", verr, now))
		if verr != nil {
			alert = alertBadCertificate
			var ua x509.UnknownAuthorityError
			var ci x509.CertificateInvalidError
			if errors.As(verr, &ua) {
				alert = alertUnknownCA
			} else if errors.As(verr, &ci) && ci.Reason == x509.Expired {
				alert = alertCertificateExpired
			}
			return alert, cmp.Or(verify.ReasonOf(verr), verify.ReasonOther), &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: verr}
		}
		cs.VerifiedChains = chains
	}
	if len(certs) > 0 {
		switch certs[0].PublicKey.(type) {
		case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		default:
			return alertUnsupportedCert, verify.ReasonMalformed, fmt.Errorf("tls: client certificate contains an unsupported public key of type %T", certs[0].PublicKey)
		}
	}
	if cfg.VerifyPeerCertificate != nil && len(certs) > 0 {
		raw := make([][]byte, len(certs))
		for i, c := range certs {
			raw[i] = c.Raw
		}
		if err := cfg.VerifyPeerCertificate(raw, cs.VerifiedChains); err != nil {
			return alertBadCertificate, e.unexplained("VerifyPeerCertificate", err), err
		}
	}
	if cfg.VerifyConnection != nil {
		if err := cfg.VerifyConnection(*cs); err != nil {
			return alertBadCertificate, e.unexplained("client_auth verifier", err), err
		}
	}
	return "", "", nil
}

// refusalSummary says who refused the client at the handshake, and why:
// the last step that refused.
func (e *engine) refusalSummary(err error) string {
	for i := len(e.rep.Steps) - 1; i >= 0; i-- {
		if s := e.rep.Steps[i]; s.Verdict == verify.VerdictRefused {
			return fmt.Sprintf("%s refuses the client at the handshake: %s", s.Name, firstClause(s.Detail))
		}
	}
	return "the handshake fails: " + err.Error()
}

// firstClause is what a step's detail says first: up to its first
// sentence end, or its first colon when a short label comes before it
// ("intermediate not sent: ...").
func firstClause(s string) string {
	if i := strings.Index(s, ": "); i > 0 && i < 60 {
		return s[:i]
	}
	for _, sep := range []string{". ", "; "} {
		if i := strings.Index(s, sep); i > 0 {
			s = s[:i]
		}
	}
	return s
}

// unexplained returns the reason of a verifier's refusal, and adds a step
// for it when no verifier of the suite told one (a verifier of Caddy's
// or another plugin refused).
func (e *engine) unexplained(who string, err error) string {
	if e.trace != nil {
		for _, s := range e.trace.Steps() {
			if s.Verdict == verify.VerdictRefused || s.Verdict == verify.VerdictUnknown {
				return s.Reason
			}
		}
	}
	reason := cmp.Or(verify.ReasonOf(err), verify.ReasonOther)
	e.add(verify.Step{Stage: "chain", Name: who, Verdict: verify.VerdictRefused, Reason: reason, Detail: err.Error()})
	return reason
}

// identityStep says who the server now thinks the client is: the
// identity every consumer reads (peer.FromState).
func identityStep(cs *tls.ConnectionState) verify.Step {
	id := peer.FromState(cs)
	s := verify.Step{Stage: "identity", Name: "peer identity", Verdict: verify.VerdictInfo}
	switch {
	case id != nil:
		s.Detail = "verified: " + id.Describe()
	case len(cs.PeerCertificates) > 0:
		s.Detail = "the certificate was presented but nothing verified it (client_auth mode request or require without live_trust): the request has no verified identity"
	default:
		s.Detail = "no client certificate: the request has no verified identity"
	}
	return s
}

// describeClientAuth says what the policy's tls.Config asks of clients.
func describeClientAuth(cfg *tls.Config) string {
	if cfg.ClientAuth == tls.NoClientCert {
		return "no client_auth: the server does not ask for a client certificate"
	}
	s := "client_auth mode " + truststore.ModeName(cfg.ClientAuth)
	switch {
	case cfg.ClientAuth >= tls.VerifyClientCertIfGiven && cfg.ClientCAs != nil:
		s += ", crypto/tls verifies the chain against the client_auth trust_pool (as read at config load)"
	case cfg.ClientAuth >= tls.VerifyClientCertIfGiven:
		s += ", crypto/tls verifies the chain against the system roots (no trust_pool)"
	default:
		s += ", crypto/tls does not verify the chain"
	}
	if cfg.VerifyConnection != nil {
		s += "; then the client_auth verifiers run, in order"
	}
	return s
}

// callerPool names where Caddy's own client_auth pool comes from.
func callerPool(*x509.Certificate) string {
	return "client_auth trust_pool (Caddy's own, read at config load; it keeps subjects only)"
}

// poolCerts lists a pool's anchors by parsing the subjects crypto/x509
// keeps: a CertPool lists nothing else. Nil for the system roots.
func poolCerts(p *x509.CertPool) []*x509.Certificate {
	if p == nil {
		return nil
	}
	var out []*x509.Certificate
	//nolint:staticcheck // Subjects is deprecated for system pools only; this pool is Caddy's own
	for _, raw := range p.Subjects() {
		c := &x509.Certificate{RawSubject: raw}
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(raw, &rdn); err == nil {
			c.Subject.FillFromRDNSequence(&rdn)
		}
		out = append(out, c)
	}
	return out
}

// negotiate picks the ALPN protocol as crypto/tls does: the server's
// first protocol the client offers.
func negotiate(server, client []string) string {
	for _, s := range server {
		if slices.Contains(client, s) {
			return s
		}
	}
	return ""
}

// listenAddr is the local address of a listen address (":8443" is
// 127.0.0.1:8443).
func listenAddr(listen string) net.Addr {
	host, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(listen, "tcp/"), "tcp4/"))
	if err != nil {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	var p int
	fmt.Sscanf(port, "%d", &p) // the first port of a range
	return &net.TCPAddr{IP: ip, Port: p}
}
