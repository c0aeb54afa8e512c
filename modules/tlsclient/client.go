package tlsclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/keystore"
)

// Client is the client side of a TLS connection to a backend as the
// suite makes it, shared by the mtls transport (HTTP) and the layer-4
// passthrough handler:
//
//   - the backend's chain is verified against the trust pool current at
//     each handshake (resumed ones included), with its serverAuth usage,
//     and against the server name or the pinned identities (Verify);
//   - the client certificate is the keystore identity current at each
//     handshake, a lock-free read;
//   - a failed handshake is classified (a Reason constant, the backend's
//     alert) and counted in trustline_upstream_handshake_failures_total.
//
// Make one with Load in Provision, then call Apply on the
// tls.Config that upstream connections clone, and Handshake for each
// connection (or let crypto/tls use the config Apply set up).
type Client struct {
	// Pool is the trust pool asked for its current CertPool at each
	// handshake. Nil: the static roots of the config given to Apply
	// (nil there too: the system roots).
	Pool caddytls.CA
	// Keystore is presented to backends that ask for a client
	// certificate. Nil: the config's own client certificate, if any.
	Keystore keystore.Source
	// KeystoreName names the keystore in logs (a file, a CA).
	KeystoreName string
	// Pins, when not empty, must match the verified backend certificate,
	// in place of the server name check.
	Pins Pins

	// taken from the config by Apply
	roots    *x509.CertPool
	insecure bool
	clientFn func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	static   []tls.Certificate
}

// Check rejects the combinations of an upstream TLS config that cannot
// work with a live trust pool, a keystore client identity (clientIdentity
// says whether one is configured) and pinned backend identities. Run it
// when parsing a Caddyfile and in Provision, before Load.
func Check(cfg *reverseproxy.TLSConfig, clientIdentity bool, upstreamIdentity []string) error {
	var errs []error
	if cfg != nil {
		if clientIdentity && (cfg.ClientCertificateFile != "" || cfg.ClientCertificateKeyFile != "" || cfg.ClientCertificateAutomate != "") {
			errs = append(errs, errors.New("client_identity and tls_client_auth both set: use one (client_identity pem <cert> <key> reads PEM files with rotation)"))
		}
		if cfg.InsecureSkipVerify && len(upstreamIdentity) > 0 {
			errs = append(errs, errors.New("upstream_identity needs verification, but tls_insecure_skip_verify turns it off"))
		}
		if cfg.CARaw != nil && (len(cfg.RootCAPool) > 0 || len(cfg.RootCAPEMFiles) > 0) {
			errs = append(errs, errors.New("trust_pool and tls_trusted_ca_certs both set: use one"))
		}
		if cfg.InsecureSkipVerify && cfg.CARaw != nil {
			errs = append(errs, errors.New("a trust pool is set, but tls_insecure_skip_verify turns verification off"))
		}
	}
	if _, err := ParsePins(upstreamIdentity); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Load provisions the live parts of an upstream TLS config: the
// client identity in the keystore-source field identityField of holder
// (a json.RawMessage tagged namespace=trustline.keystore; skipped when
// empty), loaded with the clientAuth usage required; the trust pool in
// cfg.CARaw, loaded here so that each handshake asks it for its current
// pool (Caddy clears the field once loaded, so MakeTLSClientConfig does
// not take a one-time copy of it); and the pins of upstreamIdentity. It
// registers the handshake failure metric in ctx's registry. The keystore
// and the pool are released with the config (Caddy cleans them up).
// Errors name the option: client_identity, trust_pool, upstream_identity.
func Load(ctx caddy.Context, cfg *reverseproxy.TLSConfig, holder any, identityField string, upstreamIdentity []string) (*Client, error) {
	l := new(Client)
	var err error
	if l.Pins, err = ParsePins(upstreamIdentity); err != nil {
		return nil, err
	}
	registerMetrics(ctx)
	if hasRaw(holder, identityField) {
		src, err := keystore.Load(ctx, holder, identityField, keystore.UsageClientAuth)
		if err != nil {
			return nil, fmt.Errorf("client_identity: %w", err)
		}
		l.Keystore = src
		l.KeystoreName = fmt.Sprintf("%T", src)
		if n, ok := src.(interface{ Name() string }); ok {
			l.KeystoreName = n.Name()
		}
	}
	if cfg != nil && cfg.CARaw != nil {
		mod, err := ctx.LoadModule(cfg, "CARaw")
		if err != nil {
			return nil, fmt.Errorf("trust_pool: %w", err)
		}
		ca, ok := mod.(caddytls.CA)
		if !ok {
			return nil, fmt.Errorf("trust_pool: module %T is not a certificate pool provider", mod)
		}
		l.Pool = ca
	}
	return l, nil
}

// Apply takes over verification and the client certificate of cfg, the
// config upstream connections clone (as MakeTLSClientConfig made it, or
// by hand). Its static roots (RootCAs: used when Pool is nil) and
// InsecureSkipVerify move into l; crypto/tls's own verification is
// replaced (not skipped) by a VerifyConnection callback that calls Verify
// against cfg's server name, or the one the connection sent; and
// GetClientCertificate returns Keystore's current certificate, else what
// cfg had (a callback or static certificates), else none. Call it once,
// before the first handshake.
func (l *Client) Apply(cfg *tls.Config) {
	l.roots, l.insecure = cfg.RootCAs, cfg.InsecureSkipVerify
	l.clientFn, l.static = cfg.GetClientCertificate, cfg.Certificates
	cfg.InsecureSkipVerify = true
	cfg.RootCAs = nil
	staticName := cfg.ServerName
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		name := cs.ServerName
		if name == "" {
			name = staticName
		}
		return l.Verify(cs, name)
	}
	cfg.GetClientCertificate = l.clientCertificate
	cfg.Certificates = nil
}

// clientCertificate is the certificate to present: the identity's
// current one, else the config's own.
func (l *Client) clientCertificate(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if l.Keystore != nil {
		return l.Keystore.KeyPair(), nil
	}
	if l.clientFn != nil {
		return l.clientFn(cri)
	}
	// as crypto/tls picks among static certificates
	for i := range l.static {
		if cri.SupportsCertificate(&l.static[i]) == nil {
			return &l.static[i], nil
		}
	}
	return new(tls.Certificate), nil
}

// Insecure reports whether verification is off (insecure_skip_verify).
func (l *Client) Insecure() bool { return l.insecure }

// Handshake runs the TLS handshake with a backend over conn. cfg is this
// connection's own copy (a Clone) of the config given to Apply, with its
// ServerName final: the backend's certificate is verified against it (or
// the pins). upstream names the backend in the failure metric. It returns
// the TLS connection and the client identity presented on it, for logs:
// subject and serial, "none (not requested by the backend)" (a handshake
// that completed without a certificate request) or "none (no
// client_identity configured)", for a resumed session "resumed session
// (...)", and for a handshake that failed before the client's
// certificate step (the backend's certificate refused, say) "none (the
// handshake failed before the client certificate step)". A failure
// closes conn and returns a *HandshakeError with its reason, counted by
// upstream and reason unless ctx was canceled (ReasonCanceled: the dial
// was called off, nothing failed).
func (l *Client) Handshake(ctx context.Context, conn net.Conn, cfg *tls.Config, upstream string) (*tls.Conn, string, error) {
	serverName := cfg.ServerName
	var presented *tls.Certificate
	asked := false
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return l.Verify(cs, serverName) }
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		asked = true
		c, err := l.clientCertificate(cri)
		if c != nil && len(c.Certificate) > 0 {
			presented = c
		}
		return c, err
	}
	tc := tls.Client(conn, cfg)
	err := tc.HandshakeContext(ctx)
	who := describePresented(asked, presented)
	if err != nil && !asked {
		// crypto/tls answers a certificate request only after it has
		// verified the backend: whether the backend asked is unknown
		who = "none (the handshake failed before the client certificate step)"
	}
	if err != nil {
		_ = tc.Close()
		reason, alert := Classify(err)
		switch reason {
		case "":
			reason = ReasonOther
		case ReasonCanceled:
			return nil, who, &HandshakeError{Upstream: upstream, Reason: reason, Err: err}
		}
		CountHandshakeFailure(upstream, reason)
		return nil, who, &HandshakeError{Upstream: upstream, Reason: reason, Alert: alert, Err: err}
	}
	if !asked && tc.ConnectionState().DidResume {
		who = "resumed session (the identity its first connection presented)"
	}
	return tc, who, nil
}

func describePresented(asked bool, presented *tls.Certificate) string {
	switch {
	case !asked:
		return "none (not requested by the backend)"
	case presented == nil:
		return "none (no client_identity configured)"
	}
	return keystore.Describe(presented)
}

// CountHandshakeFailure counts a failed upstream handshake, or a backend's
// refusal after it (TLS 1.3 servers send it with their first record), in
// trustline_upstream_handshake_failures_total.
func CountHandshakeFailure(upstream, reason string) {
	handshakeFailures.WithLabelValues(upstream, reason).Inc()
}

// OnChange registers f to run after the client identity rotates (cause
// "client identity rotated") or a trust pool that reports changes reloads
// (cause "trust pool reloaded"), the moments to stop reusing connections
// and sessions made with the old material. f runs on the source's
// goroutine and must not block. The returned func unregisters f.
func (l *Client) OnChange(f func(cause string)) (cancel func()) {
	var cancels []func()
	if l.Keystore != nil {
		cancels = append(cancels, l.Keystore.OnChange(func() { f("client identity rotated") }))
	}
	if n, ok := l.Pool.(interface{ OnChange(func()) func() }); ok {
		cancels = append(cancels, n.OnChange(func() { f("trust pool reloaded") }))
	}
	return func() {
		for _, c := range cancels {
			c()
		}
	}
}

// LogFields describe the setup for a "ready" log line: the client
// identity and its source, the pins, whether the trust pool is live.
func (l *Client) LogFields() []zap.Field {
	fields := []zap.Field{zap.String("client_identity", "none")}
	if l.Keystore != nil {
		fields = []zap.Field{zap.String("client_identity", keystore.Describe(l.Keystore.KeyPair())),
			zap.String("client_identity_source", l.KeystoreName)}
	} else if len(l.static) > 0 {
		fields = []zap.Field{zap.String("client_identity", keystore.Describe(&l.static[0])),
			zap.String("client_identity_source", "tls_client_auth (read once)")}
	}
	if !l.Pins.empty() {
		fields = append(fields, zap.Stringer("upstream_identity", &l.Pins))
	}
	return append(fields, zap.Bool("live_trust_pool", l.Pool != nil))
}

// hasRaw reports whether holder's field holds a module's JSON.
func hasRaw(holder any, field string) bool {
	v := reflect.ValueOf(holder).Elem().FieldByName(field)
	raw, ok := v.Interface().(json.RawMessage)
	return ok && len(raw) > 0
}
