package upstream

import (
	"cmp"
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

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/modules/tlsclient"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is Caddy's `http` reverse-proxy transport (embedded: its
// fields, Caddyfile options, health checks and https:// upstreams work the
// same) with a client identity read from the keystore and a backend trust
// pool read live at each upstream handshake, optional pinning of the
// backend's identity (upstream_identity), and a fresh connection pool
// after each rotation (the old one drained). The README says it in full.
// HTTP/3 upstreams are refused: that path takes no client certificate
// callback, and the identity would be silently dropped.
type Transport struct {
	reverseproxy.HTTPTransport

	// client_identity and upstream_identity; setting either enables TLS
	// to the upstream.
	tlsclient.Settings

	client *tlsclient.Client // identity, live trust pool, pins (with TLS only)
	logger *zap.Logger

	cancel func() // stops following rotations (nil without TLS)
	*pools
}

// pools is the transport's connection pools: the current one, and those
// being drained after a rotation.
type pools struct {
	current  atomic.Pointer[http.Transport]
	template *http.Transport
	h2       bool
	mu       sync.Mutex // serializes rotations
	stop     chan struct{}
	draining sync.WaitGroup
	lastConn sync.Map // upstream address -> *tlsclient.Conn (the connection last made there)
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.mtls",
		New: func() caddy.Module { return new(Transport) },
	}
}

// check turns TLS on when client_identity or upstream_identity is set, and
// rejects conflicting options (Caddyfile parsing and Provision).
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
		// the trust pool is loaded here, not once by the embedded transport
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
	t.pools = &pools{stop: make(chan struct{}), template: rt}
	t.h2 = slices.Contains(t.Versions, "2") || slices.Contains(t.Versions, "h2c")
	t.current.Store(rt)
	if t.client != nil {
		if rt.TLSClientConfig == nil {
			rt.TLSClientConfig = new(tls.Config)
		}
		// crypto/tls's own check is replaced (not skipped); the deprecated
		// root_ca_pool / root_ca_pem_files stay as static roots
		t.client.Apply(rt.TLSClientConfig)
		rt.DialTLSContext = t.dialTLS
		t.cancel = t.client.OnChange(t.rotate)
		t.logger.Info("upstream TLS transport ready", t.client.LogFields()...)
		if t.client.Insecure() {
			t.logger.Warn("tls_insecure_skip_verify: backends' certificates are NOT verified")
		}
	}
	return nil
}

// dialTLS dials the upstream and runs Client.Handshake with a copy of the
// base config; it returns the *tls.Conn, whose protocol net/http reads.
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
	cfg.ServerName = cmp.Or(cfg.ServerName, host)
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

// RoundTrip sends the request through the current connection pool, and
// reports a backend that refused the client certificate after a TLS 1.3
// handshake completed on our side: over HTTP/1.1 its alert is in err;
// over HTTP/2 net/http reports only that the connection died, and the
// alert is read back from the last connection made to that upstream.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.SetScheme(req)
	resp, err := t.current.Load().RoundTrip(req)
	var he *tlsclient.HandshakeError
	if err != nil && t.client != nil && req.URL.Scheme == "https" && !errors.As(err, &he) {
		upstream := req.URL.Host
		if di, ok := reverseproxy.GetDialInfo(req.Context()); ok {
			upstream = di.Address
		}
		var last *tlsclient.Conn
		if v, ok := t.lastConn.Load(upstream); ok {
			last = v.(*tlsclient.Conn)
		}
		err = t.client.Refusal(upstream, last, err, t.logger)
	}
	return resp, err
}

// rotate moves new requests to a fresh connection pool (new connections
// present the current identity, verified against the current pool) and
// drains the old one: its connections close as their requests end.
func (t *Transport) rotate(why string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.stop:
		return
	default:
	}
	next := t.template.Clone()
	next.TLSNextProto = nil // registered again below, bound to this pool
	if t.h2 {
		//nolint:staticcheck // as Caddy's http transport does
		if err := http2.ConfigureTransport(next); err != nil {
			t.logger.Error("cannot renew the upstream connection pool; idle connections closed instead", zap.String("cause", why), zap.Error(err))
			t.current.Load().CloseIdleConnections()
			return
		}
	}
	old := t.current.Swap(next)
	t.logger.Info("upstream connections renewed", append([]zap.Field{zap.String("cause", why)}, t.client.Current()...)...)
	t.draining.Add(1)
	go t.drain(old)
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
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
	if t.pools != nil {
		t.mu.Lock()
		close(t.stop)
		t.mu.Unlock()
		t.draining.Wait()
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
