package explain

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/trustline/trustline/modules/tlsclient"
	"github.com/trustline/trustline/modules/upstream"
	"github.com/trustline/trustline/modules/verify"
)

// dialTimeout bounds the dial and handshake of --upstream; afterReadWait
// is how long the backend has to refuse our certificate after a TLS 1.3
// handshake (it sends its alert with its first record).
const (
	dialTimeout   = 10 * time.Second
	afterReadWait = 2 * time.Second
)

// dialUpstream dials the backend the request names (an upstream of a
// reverse_proxy of the config: explain dials nothing else) through
// tlsDial: a real handshake, made as a probe (a failure is reported here,
// neither counted nor logged).
func (e *engine) dialUpstream() error {
	var h *reverseproxy.Handler
	addr := e.req.Upstream
	e.eachProxy(func(p *reverseproxy.Handler) {
		if h == nil && slices.ContainsFunc(p.Upstreams, func(u *reverseproxy.Upstream) bool { return sameAddr(u.Dial, addr) }) {
			h = p
		}
	})
	if h == nil {
		return fmt.Errorf("upstream %q is not an upstream of a reverse_proxy of this config (explain dials only the config's own upstreams); the config's TLS upstreams: %s",
			addr, e.tlsUpstreams())
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	ctx = tlsclient.Probe(context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer()))
	start := verify.Step{Stage: "upstream", Name: "reverse_proxy", Verdict: verify.VerdictInfo,
		Detail: fmt.Sprintf("dialing %s now, as reverse_proxy does: %s", addr, describeTransport(h.Transport))}
	dial, known := tlsDial(h.Transport)
	if !known {
		return fmt.Errorf("upstream %s: transport %s is not one explain can dial", addr, handlerName(h.Transport))
	}
	if dial == nil {
		return fmt.Errorf("upstream %s: its transport speaks plain HTTP: there is no TLS handshake to explain", addr)
	}
	var setup *tlsclient.Setup
	if t, ok := h.Transport.(*upstream.Transport); ok {
		s := t.Live().Describe()
		setup, start.Checks = &s, setupChecks(s)
	}
	e.add(start)
	conn, err := dial(ctx, "tcp", addr)
	if err == nil {
		err = afterHandshake(conn)
		defer conn.Close()
	}
	e.upstreamVerdict(addr, setup, conn, err, h)
	return nil
}

// tlsDial is the TLS dial of a reverse_proxy transport: the mtls
// transport's own, or for Caddy's http transport crypto/tls with its
// tls.Config (the server name the address's host when the config has
// none). Nil for plain HTTP; known is false for a transport explain
// cannot dial.
func tlsDial(t http.RoundTripper) (dial func(ctx context.Context, network, addr string) (net.Conn, error), known bool) {
	switch t := t.(type) {
	case *upstream.Transport:
		if t.Live() != nil {
			return t.Transport.DialTLSContext, true
		}
		return nil, true
	case *reverseproxy.HTTPTransport:
		if t.TLS != nil && t.Transport != nil && t.Transport.TLSClientConfig != nil {
			return (&tls.Dialer{Config: t.Transport.TLSClientConfig}).DialContext, true
		}
		return nil, true
	}
	return nil, false
}

// afterHandshake waits briefly for the backend's first record: a TLS 1.3
// server refuses a client certificate with an alert after the handshake
// completed on our side. No byte of ours is sent.
func afterHandshake(conn net.Conn) error {
	tc, ok := conn.(*tls.Conn)
	if !ok || tc.ConnectionState().Version != tls.VersionTLS13 {
		return nil
	}
	_ = tc.SetReadDeadline(time.Now().Add(afterReadWait))
	var one [1]byte
	_, err := tc.Read(one[:])
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return nil
	}
	if reason, _ := tlsclient.Classify(err); reason == tlsclient.ReasonCertificateRequired || reason == tlsclient.ReasonBadCertificate || reason == tlsclient.ReasonAlert {
		return err
	}
	return nil
}

// upstreamVerdict sets the steps and verdict of the dial.
func (e *engine) upstreamVerdict(addr string, setup *tlsclient.Setup, conn net.Conn, err error, h *reverseproxy.Handler) {
	presented := "the configured client identity"
	if setup != nil {
		presented = identityLine(*setup)
	}
	if err == nil {
		s := verify.Step{Stage: "upstream", Name: "handshake", Verdict: verify.VerdictAdmitted}
		if tc, ok := conn.(*tls.Conn); ok {
			cs := tc.ConnectionState()
			if len(cs.PeerCertificates) > 0 {
				s.Chain = verify.DescribeCerts(cs.PeerCertificates)
			}
			s.Detail = fmt.Sprintf("%s accepted the handshake (%s); its certificate verified; we presented: %s", addr, tls.VersionName(cs.Version), presented)
		}
		e.add(s)
		e.rep.Verdict = Verdict{Outcome: OutcomeAdmitted, Summary: "the backend " + addr + " and this server trust each other: the handshake completes"}
		return
	}
	reason, alert := tlsclient.Classify(err)
	reason = cmp.Or(reason, tlsclient.ReasonOther)
	s := verify.Step{Stage: "upstream", Name: "handshake", Verdict: verify.VerdictRefused, Reason: reason}
	var v Verdict
	switch reason {
	case tlsclient.ReasonBadCertificate, tlsclient.ReasonCertificateRequired:
		s.Detail = fmt.Sprintf("the backend %s refused our certificate with the alert %q; we presented: %s", addr, alert, presented)
		v = Verdict{Outcome: OutcomeRefusedHandshake, Reason: reason, Alert: alert, Summary: "the backend refuses our client certificate (" + alert + "); we presented " + presented}
	case tlsclient.ReasonAlert:
		s.Detail = fmt.Sprintf("the backend %s ended the handshake with the alert %q", addr, alert)
		v = Verdict{Outcome: OutcomeRefusedHandshake, Reason: reason, Alert: alert, Summary: "the backend ends the handshake: " + alert}
	case tlsclient.ReasonTimeout:
		s.Detail = fmt.Sprintf("no answer from %s within %s: %v", addr, dialTimeout, err)
		v = Verdict{Outcome: OutcomeUndetermined, Reason: reason, Summary: "the backend did not answer in time"}
	default:
		s.Detail = fmt.Sprintf("we refused the backend's certificate (%s): %v", reason, err)
		if cs := e.backendChainStep(err, h); cs != nil {
			s.Detail, s.Chain, s.Anchors = cs.Detail, cs.Chain, cs.Anchors
		}
		v = Verdict{Outcome: OutcomeRefusedHandshake, Reason: reason, Alert: alertFor(reason),
			Summary: "this server does not trust the backend " + addr + "'s certificate (" + reason + ")"}
		if reason == tlsclient.ReasonOther {
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Op == "dial" {
				v = Verdict{Outcome: OutcomeUndetermined, Reason: reason, Summary: "the backend cannot be reached: " + err.Error()}
			}
		}
	}
	e.add(s)
	e.rep.Verdict = v
}

// backendChainStep says, in the verify vocabulary, why the backend's
// chain did not verify: the chain it sent, against the pool's anchors.
func (e *engine) backendChainStep(err error, h *reverseproxy.Handler) *verify.Step {
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) || len(cve.UnverifiedCertificates) == 0 {
		return nil
	}
	var anchors []*x509.Certificate
	var origin func(*x509.Certificate) string
	if t, ok := h.Transport.(*upstream.Transport); ok && t.Live() != nil {
		if src, ok := t.Live().Pool.(verify.AnchorSource); ok {
			anchors = src.CurrentAnchors().Certificates()
		}
		if o, ok := t.Live().Pool.(verify.OriginTeller); ok {
			origin = o.AnchorOrigin
		}
	}
	certs := cve.UnverifiedCertificates
	s := verify.ChainStep("backend", certs[0], certs[1:], anchors, origin, nil, "", cve.Err, time.Now())
	s.Detail = "we refused the backend's certificate: " + s.Detail
	return &s
}

// alertFor is the alert our side sends when it refuses the backend.
func alertFor(reason string) string {
	switch reason {
	case verify.ReasonUnknownAuthority:
		return alertUnknownCA
	case verify.ReasonExpired:
		return alertCertificateExpired
	}
	return alertBadCertificate
}

func setupChecks(s tlsclient.Setup) []verify.Check {
	checks := []verify.Check{
		{Name: "client identity", Want: cmp.Or(s.IdentitySource, "none configured"), Have: identityLine(s), OK: s.Identity != nil},
		{Name: "backend verified against", Want: "trust", Have: s.Trust, OK: !s.Insecure},
	}
	if s.Pins != "" {
		checks = append(checks, verify.Check{Name: "upstream_identity", Want: "pins", Have: s.Pins, OK: true})
	}
	return checks
}

// tlsUpstreams lists the upstreams of the config reached over TLS.
func (e *engine) tlsUpstreams() string {
	var out []string
	e.eachProxy(func(h *reverseproxy.Handler) {
		if dial, _ := tlsDial(h.Transport); dial != nil {
			for _, u := range h.Upstreams {
				out = append(out, u.Dial)
			}
		}
	})
	return cmp.Or(strings.Join(out, ", "), "none")
}

// eachProxy calls f for every reverse_proxy handler of the http app.
func (e *engine) eachProxy(f func(*reverseproxy.Handler)) {
	if e.http == nil {
		return
	}
	var walk func(routes caddyhttp.RouteList)
	walk = func(routes caddyhttp.RouteList) {
		for _, r := range routes {
			for _, h := range r.Handlers {
				switch h := h.(type) {
				case *reverseproxy.Handler:
					f(h)
				case *caddyhttp.Subroute:
					walk(h.Routes)
				}
			}
		}
	}
	for _, srv := range e.http.Servers {
		walk(srv.Routes)
	}
}

// sameAddr compares upstream addresses, ignoring case and a tcp/ prefix.
func sameAddr(a, b string) bool {
	norm := func(s string) string { return strings.TrimPrefix(strings.ToLower(s), "tcp/") }
	return norm(a) == norm(b)
}
