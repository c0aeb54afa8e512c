package upstream

import (
	"github.com/trustline/trustline/internal/caddyinternals"

	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/trustline/trustline/modules/tlsclient"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is Caddy's `http` reverse-proxy transport with a client
// identity that rotates without a reload, a trust pool read live at each
// upstream handshake, and optional pinning of the backend's identity.
//
// It embeds Caddy's HTTPTransport: every field and Caddyfile option of the
// `http` transport works the same (keep-alive, timeouts, resolvers,
// PROXY protocol, tls_server_name, tls_except_ports, versions, ...), and
// so do health checks and https:// upstreams. On top of it:
//
//   - the client certificate is read from the keystore source at each
//     upstream handshake (lock-free); after a rotation, new requests go
//     through a fresh connection pool and the old one is drained (each
//     connection closed once its in-flight requests end), so every
//     backend sees the new certificate promptly, with no failed request;
//   - the backend's chain is verified against the trust pool's current
//     pool (`tls.ca` / trust_pool, any tls.ca_pool.source module) at each
//     handshake, with the server name from the upstream address or
//     tls_server_name; a trust pool that reports changes also renews the
//     connection pool;
//   - upstream_identity pins the backend's SPIFFE ID or DNS name, which
//     then stands in for the server name check;
//   - a failed handshake gives the client a 502 (as with the `http`
//     transport) and logs the upstream, the reason and the identity
//     presented; failures are counted by reason.
//
// HTTP/3 upstreams (`versions 3`) are refused: that path takes no client
// certificate callback, and the identity would be silently dropped.
type Transport struct {
	reverseproxy.HTTPTransport

	// client_identity and upstream_identity; setting either enables TLS
	// to the upstream.
	tlsclient.Settings

	client *tlsclient.Client // identity, live trust pool, pins (with TLS only)
	logger *zap.Logger

	cancels []func()
	*pools
}

// pools is the transport's connection pools: the current one, and those
// being drained after a rotation.
type pools struct {
	current   atomic.Pointer[http.Transport]
	template  *http.Transport
	h2        bool
	mu        sync.Mutex // serializes rotations
	stop      chan struct{}
	draining  sync.WaitGroup
	drainMu   sync.Mutex
	drainList map[*http.Transport]struct{}
	lastConn  sync.Map // upstream address -> *tlsclient.Conn (the connection last made there)
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.mtls",
		New: func() caddy.Module { return new(Transport) },
	}
}

// check turns TLS on when client_identity or upstream_identity is set, and
// rejects conflicting options; Caddyfile parsing and Provision both run
// it.
func (t *Transport) check() error {
	if (t.ClientIdentityRaw != nil || len(t.UpstreamIdentity) > 0) && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	var errs []error
	if slices.Contains(t.Versions, "3") {
		errs = append(errs, errors.New("versions 3 (HTTP/3 over QUIC) cannot carry the client identity or the live trust pool of this transport; use versions 1.1 2 (the default), or Caddy's http transport without a client identity"))
	}
	if err := tlsclient.Check(t.TLS, &t.Settings); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Provision loads the keystore and the trust pool, then builds the
// embedded http transport and takes over its TLS callbacks.
func (t *Transport) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	if err := t.check(); err != nil {
		return fmt.Errorf("transport mtls: %w", err)
	}

	if t.TLS != nil {
		// the trust pool is loaded here (not by the embedded transport,
		// which would read the pool once) so that each handshake asks for
		// the current pool
		client, err := tlsclient.Load(ctx, t.TLS, &t.Settings)
		if err != nil {
			return fmt.Errorf("transport mtls: %w", err)
		}
		t.client = client
	}

	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return fmt.Errorf("transport mtls: %w", err)
	}
	rt := t.HTTPTransport.Transport
	t.pools = &pools{stop: make(chan struct{}), drainList: map[*http.Transport]struct{}{}}
	t.h2 = slices.Contains(t.Versions, "2") || slices.Contains(t.Versions, "h2c")
	if t.TLS != nil {
		t.setupTLS(rt)
	}
	t.template = rt
	t.current.Store(rt)

	if t.client != nil {
		t.cancels = append(t.cancels, t.client.OnChange(t.rotate))
		t.logger.Info("upstream TLS transport ready", t.client.LogFields()...)
		if t.client.Insecure() {
			t.logger.Warn("tls_insecure_skip_verify: backends' certificates are NOT verified")
		}
	}
	return nil
}

// setupTLS takes over verification and the client certificate of the
// embedded transport's TLS config, and dials TLS itself.
func (t *Transport) setupTLS(rt *http.Transport) {
	base := rt.TLSClientConfig
	if base == nil {
		base = new(tls.Config)
	}
	// crypto/tls's own check is replaced (not skipped) by VerifyConnection,
	// which verifies the chain against the pool current at this handshake;
	// the deprecated root_ca_pool / root_ca_pem_files stay as static roots
	t.client.Apply(base)
	rt.TLSClientConfig = base
	rt.DialTLSContext = t.dialTLS
}

// dialTLS dials the upstream and runs the TLS handshake with a per
// connection copy of the base config, so that the failure (if any) is
// reported with what was presented. It returns the *tls.Conn itself:
// net/http reads the protocol it negotiated from it.
func (t *Transport) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	upstream, host := addr, ""
	if di, ok := reverseproxy.GetDialInfo(ctx); ok {
		upstream, host = di.Address, di.Host
	} else if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	plain, err := t.template.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := t.client.Config("")
	if strings.Contains(cfg.ServerName, "{") {
		if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
			cfg.ServerName = repl.ReplaceAll(cfg.ServerName, "")
		}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if caddyhttp.GetVar(ctx, caddyinternals.ReverseProxyH1OnlyVar) == true {
		cfg.NextProtos = nil
	}
	hctx := ctx
	if t.template.TLSHandshakeTimeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, t.template.TLSHandshakeTimeout)
		defer cancel()
	}
	conn, err := t.client.Handshake(hctx, plain, cfg, upstream, t.logger)
	if err != nil {
		return nil, err
	}
	t.lastConn.Store(upstream, conn)
	return conn.Conn, nil
}

// RoundTrip sends the request through the current connection pool. A
// backend that refuses the client certificate after a TLS 1.3 handshake
// (its alert arrives with the first read) is reported here.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.SetScheme(req)
	resp, err := t.current.Load().RoundTrip(req)
	if err != nil && t.client != nil && req.URL.Scheme == "https" {
		var he *tlsclient.HandshakeError
		if !errors.As(err, &he) {
			err = t.backendVerdict(req, err)
		}
	}
	return resp, err
}

// backendVerdict logs and counts a refusal that a backend sent after the
// handshake completed on our side (TLS 1.3 servers check the client
// certificate after the client's last handshake message). Over HTTP/1.1
// the alert is in err; over HTTP/2 the connection dies before its first
// request and net/http reports only that, so the alert is read back from
// the last connection made to that upstream, once it is closed. It
// returns err, with the alert added when it was read back.
func (t *Transport) backendVerdict(req *http.Request, err error) error {
	upstream := req.URL.Host
	if di, ok := reverseproxy.GetDialInfo(req.Context()); ok {
		upstream = di.Address
	}
	var last *tlsclient.Conn
	if v, ok := t.lastConn.Load(upstream); ok {
		last = v.(*tlsclient.Conn)
	}
	return t.client.Refusal(upstream, last, err, t.logger)
}

// rotate moves new requests to a fresh connection pool, so that every new
// connection presents the current identity and is verified against the
// current pool, and drains the old pool: its connections close as soon as
// their in-flight requests end.
func (t *Transport) rotate(why string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.stop:
		return
	default:
	}
	next, err := t.newPool()
	if err != nil {
		t.logger.Error("cannot renew the upstream connection pool; idle connections closed instead", zap.String("cause", why), zap.Error(err))
		t.current.Load().CloseIdleConnections()
		return
	}
	old := t.current.Swap(next)
	fields := []zap.Field{zap.String("cause", why)}
	if t.client != nil {
		fields = append(fields, t.client.Current()...)
	}
	t.logger.Info("upstream connections renewed", fields...)
	t.drainMu.Lock()
	t.drainList[old] = struct{}{}
	t.drainMu.Unlock()
	t.draining.Add(1)
	go t.drain(old)
}

// newPool makes a transport like the template with its own connections.
func (t *Transport) newPool() (*http.Transport, error) {
	rt := t.template.Clone()
	rt.TLSNextProto = nil // registered again below, bound to this pool
	if t.h2 {
		//nolint:staticcheck // as Caddy's http transport does
		if err := http2.ConfigureTransport(rt); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// drain closes the old pool's connections as they become idle: at once,
// then on a backoff, until its idle timeout would have closed them anyway.
func (t *Transport) drain(old *http.Transport) {
	defer t.draining.Done()
	defer func() {
		if rec := recover(); rec != nil {
			t.logger.Error("draining upstream connections panicked", zap.Any("panic", rec))
		}
	}()
	defer func() {
		t.drainMu.Lock()
		delete(t.drainList, old)
		t.drainMu.Unlock()
	}()
	limit := old.IdleConnTimeout
	if limit <= 0 {
		limit = 2 * time.Minute
	}
	deadline := time.Now().Add(limit + time.Second)
	wait := 100 * time.Millisecond
	for {
		old.CloseIdleConnections()
		if time.Now().After(deadline) {
			return
		}
		select {
		case <-t.stop:
			old.CloseIdleConnections()
			return
		case <-time.After(wait):
		}
		if wait < 5*time.Second {
			wait *= 2
		}
	}
}

// Cleanup stops following rotations and closes idle connections of every
// pool; the keystore and trust pool are released by Caddy.
func (t *Transport) Cleanup() error {
	for _, cancel := range t.cancels {
		cancel()
	}
	t.cancels = nil
	if t.pools != nil {
		t.mu.Lock()
		close(t.stop)
		t.mu.Unlock()
		t.draining.Wait()
	}
	if t.pools != nil {
		t.current.Load().CloseIdleConnections()
	}
	return t.HTTPTransport.Cleanup()
}

// Interface guards: the optional interfaces Caddy's reverse proxy looks
// for on a transport, all kept from the embedded http transport.
var (
	_ caddy.Provisioner                                = (*Transport)(nil)
	_ caddy.CleanerUpper                               = (*Transport)(nil)
	_ http.RoundTripper                                = (*Transport)(nil)
	_ reverseproxy.TLSTransport                        = (*Transport)(nil)
	_ reverseproxy.H2CTransport                        = (*Transport)(nil)
	_ reverseproxy.HealthCheckSchemeOverriderTransport = (*Transport)(nil)
	_ reverseproxy.ProxyProtocolTransport              = (*Transport)(nil)
	_ reverseproxy.RequestHeaderOpsTransport           = (*Transport)(nil)
)
