package tlsclient

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trustline/trustline/modules/keystore"
	"github.com/trustline/trustline/modules/verify"
)

// Client is the client side of the suite's TLS connections to backends
// (README.md): Load it in Provision, give it the config its connections
// copy with Apply, then Handshake each dialed connection with a copy from
// Config.
type Client struct {
	// Pool is asked for its current CertPool at each handshake. Nil: the
	// static roots of the config given to Apply (nil there too: the
	// system roots).
	Pool caddytls.CA
	// Keystore is presented to backends that ask for a client
	// certificate. Nil: the config's own client certificate, if any.
	Keystore keystore.Source
	// Pins, when not empty, must match the verified backend certificate,
	// in place of the server name check.
	Pins Pins

	// taken from the config by Apply
	base     *tls.Config
	roots    *x509.CertPool
	insecure bool
	clientFn func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	static   []tls.Certificate

	sessions atomic.Pointer[sessions] // nil: no session resumption
}

// Settings are what the suite adds to a TLS client config of a backend
// (reverseproxy.TLSConfig, for the mtls transport and the passthrough
// handler). Embed it beside the config: its JSON fields sit with the
// config's own.
type Settings struct {
	// ClientIdentityRaw is the keystore source (pem, pkcs12, jks,
	// internal, spiffe_workload) presented to backends that ask for a
	// client certificate, read at each new connection; its leaf must allow
	// the clientAuth extended key usage. Conflicts with the config's
	// client certificate files (read once). Default: none.
	ClientIdentityRaw json.RawMessage `json:"client_identity,omitempty" caddy:"namespace=trustline.keystore inline_key=source"`

	// UpstreamIdentity pins the backend's identity beyond chain
	// verification: SPIFFE IDs (spiffe://td/path), trust domains
	// (spiffe://td) or DNS names, one of which the verified certificate
	// must hold; it then replaces the check against the server name.
	// Default: none.
	UpstreamIdentity []string `json:"upstream_identity,omitempty"`
}

// Check rejects the combinations of an upstream TLS config and s that
// cannot work. Load runs it; run it too when parsing a Caddyfile, for
// errors with the file's line.
func Check(cfg *reverseproxy.TLSConfig, s *Settings) error {
	var errs []error
	if cfg != nil {
		if s.ClientIdentityRaw != nil && (cfg.ClientCertificateFile != "" || cfg.ClientCertificateKeyFile != "" || cfg.ClientCertificateAutomate != "") {
			errs = append(errs, errors.New("client_identity and tls_client_auth both set: use one (client_identity pem <cert> <key> reads PEM files with rotation)"))
		}
		if cfg.InsecureSkipVerify && len(s.UpstreamIdentity) > 0 {
			errs = append(errs, errors.New("upstream_identity needs verification, but tls_insecure_skip_verify turns it off"))
		}
		if cfg.CARaw != nil && (len(cfg.RootCAPool) > 0 || len(cfg.RootCAPEMFiles) > 0) {
			errs = append(errs, errors.New("trust_pool and tls_trusted_ca_certs both set: use one"))
		}
		if cfg.InsecureSkipVerify && cfg.CARaw != nil {
			errs = append(errs, errors.New("a trust pool is set, but tls_insecure_skip_verify turns verification off"))
		}
	}
	if _, err := ParsePins(s.UpstreamIdentity); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Load checks (Check) and provisions the live parts of an upstream TLS
// config: the keystore of s, the pins, and the trust pool of cfg.CARaw,
// loaded here so that each handshake asks it for its current pool (Caddy
// clears the field once loaded, so MakeTLSClientConfig takes no one-time
// copy).
func Load(ctx caddy.Context, cfg *reverseproxy.TLSConfig, s *Settings) (*Client, error) {
	if err := Check(cfg, s); err != nil {
		return nil, err
	}
	c := new(Client)
	c.Pins, _ = ParsePins(s.UpstreamIdentity) // Check parsed them
	registerMetrics(ctx)
	if s.ClientIdentityRaw != nil {
		src, err := keystore.Load(ctx, s, "ClientIdentityRaw", keystore.UsageClientAuth)
		if err != nil {
			return nil, fmt.Errorf("client_identity: %w", err)
		}
		c.Keystore = src
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
		c.Pool = ca
	}
	return c, nil
}

// Apply takes over verification (replaced by Verify, not skipped) and the
// client certificate of cfg, the config the client's connections copy,
// and keeps it for Config. Call it once, before the first handshake.
func (c *Client) Apply(cfg *tls.Config) {
	c.base = cfg
	c.roots, c.insecure = cfg.RootCAs, cfg.InsecureSkipVerify
	c.clientFn, c.static = cfg.GetClientCertificate, cfg.Certificates
	cfg.InsecureSkipVerify, cfg.RootCAs = true, nil
	cfg.GetClientCertificate, cfg.Certificates = c.clientCertificate, nil
	staticName := cfg.ServerName
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return c.Verify(cs, cmp.Or(cs.ServerName, staticName))
	}
}

// ResumeSessions makes Config hand out a TLS session cache, replaced when
// the keystore's certificate or the trust pool's version changes: a
// resumed session carries the identity of its first connection.
func (c *Client) ResumeSessions() { c.sessions.Store(new(sessions)) }

// Config returns a copy of the config given to Apply for one connection:
// its ServerName is serverName when the config sets none, its session
// cache the current one (ResumeSessions). The caller may change it
// (ALPN, say) before Handshake.
func (c *Client) Config(serverName string) *tls.Config {
	cfg := c.base.Clone()
	cfg.ServerName = cmp.Or(cfg.ServerName, serverName)
	if s := c.sessions.Load(); s != nil {
		cfg.ClientSessionCache = c.sessionCache(s)
	}
	return cfg
}

// sessions is a TLS session cache and the material it was made for.
type sessions struct {
	cache   tls.ClientSessionCache
	cert    *tls.Certificate
	anchors *verify.Anchors
}

func (c *Client) sessionCache(s *sessions) tls.ClientSessionCache {
	var cert *tls.Certificate
	if c.Keystore != nil {
		cert = c.Keystore.KeyPair()
	}
	var anchors *verify.Anchors
	if src, ok := c.Pool.(verify.AnchorSource); ok {
		anchors = src.CurrentAnchors()
	}
	if s.cache == nil || s.cert != cert || s.anchors != anchors {
		next := &sessions{tls.NewLRUClientSessionCache(256), cert, anchors}
		if !c.sessions.CompareAndSwap(s, next) {
			next = c.sessions.Load() // another connection renewed it
		}
		s = next
	}
	return s.cache
}

// clientCertificate is the certificate to present: the keystore's
// current one, else the config's own.
func (c *Client) clientCertificate(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c.Keystore != nil {
		return c.Keystore.KeyPair(), nil
	}
	if c.clientFn != nil {
		return c.clientFn(cri)
	}
	// as crypto/tls picks among static certificates
	for i := range c.static {
		if cri.SupportsCertificate(&c.static[i]) == nil {
			return &c.static[i], nil
		}
	}
	return new(tls.Certificate), nil
}

// identity is the client certificate presented now and where it comes
// from (nil and "": none).
func (c *Client) identity() (*tls.Certificate, string) {
	switch {
	case c.Keystore != nil:
		return c.Keystore.KeyPair(), c.Keystore.Name()
	case len(c.static) > 0:
		return &c.static[0], "tls_client_auth (read once)"
	}
	return nil, ""
}

// Insecure reports whether verification is off (insecure_skip_verify).
func (c *Client) Insecure() bool { return c.insecure }

// Conn is a TLS connection to a backend that Handshake made.
type Conn struct {
	*tls.Conn
	// Presented is the client identity presented, for logs.
	Presented string
	raw       *trackedConn
	made      time.Time
}

// Handshake runs the TLS handshake with a backend over conn, a fresh
// connection to upstream (the address, for the metric and the logs), with
// cfg from Config, whose ServerName is final. An error is a
// *HandshakeError; conn is then closed, and the failure counted and
// logged (fail), unless ctx is a Probe.
func (c *Client) Handshake(ctx context.Context, conn net.Conn, cfg *tls.Config, upstream string, logger *zap.Logger, lead ...zap.Field) (*Conn, error) {
	serverName := cfg.ServerName
	var presented *tls.Certificate
	asked := false
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return c.Verify(cs, serverName) }
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		asked = true
		crt, err := c.clientCertificate(cri)
		if crt != nil && len(crt.Certificate) > 0 {
			presented = crt
		}
		return crt, err
	}
	raw := &trackedConn{Conn: conn}
	tc := tls.Client(raw, cfg)
	err := tc.HandshakeContext(ctx)
	var who string
	switch {
	case asked && presented != nil:
		who = keystore.Describe(presented)
	case asked:
		who = "none (no client_identity configured)"
	case err != nil:
		// crypto/tls answers a certificate request only after it has
		// verified the backend: whether the backend asked is unknown
		who = "none (the handshake failed before the client certificate step)"
	case tc.ConnectionState().DidResume:
		who = "resumed session (the identity its first connection presented)"
	default:
		who = "none (not requested by the backend)"
	}
	if err != nil {
		_ = tc.Close()
		reason, alert := Classify(err)
		reason = cmp.Or(reason, ReasonOther)
		he := &HandshakeError{Upstream: upstream, Reason: reason, Alert: alert, Presented: who, Err: err}
		if !isProbe(ctx) {
			c.fail(logger, he, serverName, lead)
		}
		return nil, he
	}
	cs := tc.ConnectionState()
	if ce := logger.Check(zapcore.DebugLevel, "upstream TLS handshake"); ce != nil {
		ce.Write(append(lead, zap.String("upstream", upstream), zap.String("server_name", serverName),
			zap.String("client_identity", who), zap.Bool("resumed", cs.DidResume),
			zap.String("alpn", cs.NegotiatedProtocol))...)
	}
	return &Conn{Conn: tc, Presented: who, raw: raw, made: time.Now()}, nil
}

// OnChange registers f to run (on the source's goroutine, without
// blocking) after the keystore rotates or a trust pool that reports
// changes reloads: the moments to stop reusing connections made with the
// old material. The returned func unregisters f.
func (c *Client) OnChange(f func(cause string)) (cancel func()) {
	var cancels []func()
	if c.Keystore != nil {
		cancels = append(cancels, c.Keystore.OnChange(func() { f("client identity rotated") }))
	}
	if n, ok := c.Pool.(interface{ OnChange(func()) func() }); ok {
		cancels = append(cancels, n.OnChange(func() { f("trust pool reloaded") }))
	}
	return func() {
		for _, cancel := range cancels {
			cancel()
		}
	}
}

// Current is the client_identity log field of the keystore's current
// certificate (none without a keystore), for the lines after a rotation.
func (c *Client) Current() []zap.Field {
	if c.Keystore == nil {
		return nil
	}
	return []zap.Field{zap.String("client_identity", keystore.Describe(c.Keystore.KeyPair()))}
}

// LogFields describe the setup for a "ready" log line.
func (c *Client) LogFields() []zap.Field {
	cert, source := c.identity()
	fields := []zap.Field{zap.String("client_identity", keystore.Describe(cert))}
	if source != "" {
		fields = append(fields, zap.String("client_identity_source", source))
	}
	if !c.Pins.empty() {
		fields = append(fields, zap.Stringer("upstream_identity", &c.Pins))
	}
	return append(fields, zap.Bool("live_trust_pool", c.Pool != nil))
}
