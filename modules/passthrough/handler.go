package passthrough

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler proxies a layer-4 connection, untouched, to one of its
// upstreams: the bytes the matchers read (the ClientHello) are replayed
// first, behind a PROXY protocol header when configured, and then the two
// TCP connections are joined directly, so the kernel's splice path copies
// the data. It counts connections per upstream (least_conn and
// max_connections see every open connection, across reloads), dials with
// a timeout, logs one line per connection and reports metrics.
//
// Connections outlive the config that accepted them: after an admin
// reload they finish on their old route, and are closed grace_period
// after the unload when one is set. max_lifetime bounds any connection.
type Handler struct {
	// Name of the route in logs and metrics. Default: "passthrough".
	Route string `json:"route,omitempty"`

	// The backends. Required.
	Upstreams []*Upstream `json:"upstreams,omitempty"`

	// How to choose an upstream. Default: random, one try per upstream.
	LoadBalancing *LoadBalancing `json:"load_balancing,omitempty"`

	// Active and passive health checks. Default: none.
	HealthChecks *HealthChecks `json:"health_checks,omitempty"`

	// Send a PROXY protocol header ("v1" or "v2") to the upstream, so it
	// learns the client's address. Default: none.
	ProxyProtocol string `json:"proxy_protocol,omitempty"`

	// When caddy-l4's tls handler terminated the client's TLS before this
	// handler, put the verified client identity in the PROXY v2 header:
	// the PP2_TYPE_SSL TLV (with the certificate's CN and DER) and TLV
	// 0xE0 (its SPIFFE ID). Needs proxy_protocol v2.
	// Default: off.
	ProxyProtocolIdentity bool `json:"proxy_protocol_identity,omitempty"`

	// TLS to the upstream, in reverse_proxy's shape (trust pool, client
	// certificate, server name...): re-encrypts a client TLS session that
	// caddy-l4's tls handler terminated before this handler ("mTLS in,
	// mTLS out"). Upstream sessions are resumed when the upstream allows.
	// Default: none, the bytes pass through as they came.
	TLS *reverseproxy.TLSConfig `json:"tls,omitempty"`

	// How long to wait for an upstream to accept. Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// Close the connection when no byte has moved either way for this
	// long. Setting it makes the proxy copy through user space (with
	// read deadlines) instead of the kernel's splice. Default: none.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// Close any connection this long after it was accepted. Default: none.
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`

	// After an admin reload or stop unloads this config, let its open
	// connections run for this long, then close them. Default: none,
	// they run until they end by themselves.
	GracePeriod caddy.Duration `json:"grace_period,omitempty"`

	ctx       caddy.Context
	logger    *zap.Logger
	policy    string
	ppVersion byte
	rr        atomic.Uint32
	tlsConfig *tls.Config

	mu         sync.Mutex
	conns      map[*proxyConn]struct{}
	unloaded   bool
	unloadedAt time.Time

	stopHealth chan struct{}
	healthDone chan struct{}

	// this route's metric series, looked up once
	mProxied, mDialFailed, mBytesUp, mBytesDown prometheus.Counter
	mActive                                     prometheus.Gauge
}

const defaultDialTimeout = 5 * time.Second

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.passthrough",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision checks the config, attaches the shared upstream state and
// starts active health checks.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.ctx = ctx
	h.logger = moduleLogger(ctx)
	h.conns = make(map[*proxyConn]struct{})
	registerMetrics(ctx, h.logger)
	if h.Route == "" {
		h.Route = "passthrough"
	}
	h.mProxied = connections.WithLabelValues(h.Route, "proxied")
	h.mDialFailed = connections.WithLabelValues(h.Route, "dial_failed")
	h.mBytesUp = transferred.WithLabelValues(h.Route, "client_to_upstream")
	h.mBytesDown = transferred.WithLabelValues(h.Route, "upstream_to_client")
	h.mActive = activeConnections.WithLabelValues(h.Route)
	if err := h.validate(); err != nil {
		return fmt.Errorf("passthrough route %q: %w", h.Route, err)
	}
	if err := h.provisionUpstreams(); err != nil {
		return fmt.Errorf("passthrough route %q: %w", h.Route, err)
	}
	if h.TLS != nil {
		cfg, err := h.TLS.MakeTLSClientConfig(ctx)
		if err != nil {
			return fmt.Errorf("passthrough route %q: tls: %w", h.Route, err)
		}
		if cfg == nil {
			cfg = new(tls.Config)
		}
		if cfg.ClientSessionCache == nil {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(256)
		}
		h.tlsConfig = cfg
	}
	if h.HealthChecks != nil && h.HealthChecks.Active != nil {
		a := h.HealthChecks.Active
		if a.Interval <= 0 {
			a.Interval = caddy.Duration(30 * time.Second)
		}
		if a.Timeout <= 0 {
			a.Timeout = caddy.Duration(5 * time.Second)
		}
		h.stopHealth, h.healthDone = make(chan struct{}), make(chan struct{})
		go h.activeHealthChecker(h.stopHealth, h.healthDone)
	}
	return nil
}

func (h *Handler) validate() error {
	var errs []error
	switch h.ProxyProtocol {
	case "":
	case "v1":
		h.ppVersion = 1
	case "v2":
		h.ppVersion = 2
	default:
		errs = append(errs, fmt.Errorf("proxy_protocol %q: want v1 or v2", h.ProxyProtocol))
	}
	if h.ProxyProtocolIdentity && h.ProxyProtocol != "v2" {
		errs = append(errs, fmt.Errorf("proxy_protocol_identity needs proxy_protocol v2 (TLVs exist only in v2)"))
	}
	if h.LoadBalancing == nil {
		h.LoadBalancing = new(LoadBalancing)
	}
	lb := h.LoadBalancing
	if !validPolicy(lb.Policy) {
		errs = append(errs, fmt.Errorf("load_balancing policy %q: want random, round_robin, least_conn, first or ip_hash", lb.Policy))
	}
	h.policy = lb.Policy
	if lb.TryDuration > 0 && lb.TryInterval <= 0 {
		lb.TryInterval = caddy.Duration(250 * time.Millisecond)
	}
	for name, d := range map[string]caddy.Duration{
		"dial_timeout": h.DialTimeout, "idle_timeout": h.IdleTimeout, "max_lifetime": h.MaxLifetime,
		"grace_period": h.GracePeriod, "try_duration": lb.TryDuration, "try_interval": lb.TryInterval,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	if h.DialTimeout == 0 {
		h.DialTimeout = caddy.Duration(defaultDialTimeout)
	}
	if hc := h.HealthChecks; hc != nil && hc.Passive != nil {
		if hc.Passive.MaxFails < 0 {
			errs = append(errs, fmt.Errorf("max_fails must not be negative"))
		}
		if hc.Passive.MaxFails == 0 {
			hc.Passive.MaxFails = 1
		}
	}
	if hc := h.HealthChecks; hc != nil && hc.Active != nil && (hc.Active.Port < 0 || hc.Active.Port > 65535) {
		errs = append(errs, fmt.Errorf("health check port %d is out of range", hc.Active.Port))
	}
	return errors.Join(errs...)
}

// Cleanup stops health checks and releases the upstreams; connections
// still open keep running (until the grace period, if any).
func (h *Handler) Cleanup() error {
	if h.stopHealth != nil {
		close(h.stopHealth)
		<-h.healthDone
	}
	h.releaseUpstreams()
	h.mu.Lock()
	h.unloaded, h.unloadedAt = true, time.Now()
	open := len(h.conns)
	h.mu.Unlock()
	if h.GracePeriod > 0 {
		// scheduled even with nothing open: a connection being set up
		// right now is tracked after this
		time.AfterFunc(time.Duration(h.GracePeriod), func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			for pc := range h.conns {
				pc.forceClose("grace_period")
			}
		})
	}
	if open == 0 {
		return nil
	}
	if h.GracePeriod > 0 {
		h.logger.Info("config unloaded: open passthrough connections finish on their old route until the grace period ends",
			zap.String("route", h.Route), zap.Int("connections", open), zap.Duration("grace_period", time.Duration(h.GracePeriod)))
	} else {
		h.logger.Info("config unloaded: open passthrough connections finish on their old route (no grace_period set)",
			zap.String("route", h.Route), zap.Int("connections", open))
	}
	return nil
}

// Handle proxies the connection; it returns when both directions ended.
func (h *Handler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	pc := &proxyConn{h: h, start: time.Now(), client: cx.RemoteAddr()}
	if hello := GetClientHello(cx); hello != nil {
		pc.serverName, pc.alpn = hello.ServerName, hello.ALPN
	}
	// a TLS connection terminated at layer 4 before this handler
	var terminated *tls.ConnectionState
	if states := l4tls.GetConnectionStates(cx); len(states) > 0 {
		terminated = states[len(states)-1]
		pc.identity = verifiedIdentity(terminated)
	}
	replay, down := takeReplay(cx)
	pc.down = down

	if h.tlsConfig != nil && terminated == nil {
		h.mDialFailed.Inc()
		pc.logDone(nil, 0, 0, "config_error", errors.New("tls to the upstream re-encrypts a client TLS session that caddy-l4's tls handler terminated first; this connection's was not"))
		return nil
	}
	var header []byte
	if h.ppVersion != 0 {
		hdr := proxyproto.HeaderProxyFromAddrs(h.ppVersion, cx.RemoteAddr(), cx.LocalAddr())
		var err error
		if h.ProxyProtocolIdentity && terminated != nil {
			var tlvs []proxyproto.TLV
			if tlvs, err = identityTLVs(terminated); err == nil {
				err = hdr.SetTLVs(tlvs)
			}
		}
		if err == nil {
			header, err = hdr.Format()
		}
		if err != nil {
			h.mDialFailed.Inc()
			pc.logDone(nil, 0, 0, "proxy_protocol_error", err)
			return nil
		}
	}

	up, u, err := h.dial(cx, header)
	if err != nil {
		h.mDialFailed.Inc()
		pc.logDone(nil, 0, 0, "dial_failed", err)
		return nil
	}
	defer u.release()
	pc.up, pc.upstream = up, u
	if h.tlsConfig != nil {
		header = nil // sent before the upstream handshake
	}

	h.mProxied.Inc()
	h.mActive.Inc()
	defer h.mActive.Dec()
	if !h.track(pc) {
		// unloaded with a grace period already over
		pc.forceClose("grace_period")
	}
	defer h.untrack(pc)
	if h.MaxLifetime > 0 {
		t := time.AfterFunc(time.Duration(h.MaxLifetime), func() { pc.forceClose("max_lifetime") })
		defer t.Stop()
	}

	toUp, toDown, reason, cerr := pc.run(header, replay, time.Duration(h.IdleTimeout))
	h.mBytesUp.Add(float64(toUp))
	h.mBytesDown.Add(float64(toDown))
	pc.logDone(u, toUp, toDown, reason, cerr)
	return nil
}

// takeReplay returns the bytes the matchers read but nobody consumed yet,
// and the connection to read the rest from, unwrapped so that a plain
// *net.TCPConn (or a PROXY-protocol conn that forwards to one) is copied
// by splice.
func takeReplay(cx *layer4.Connection) ([]byte, net.Conn) {
	replay := append([]byte(nil), cx.MatchingBytes()...)
	down := cx.Conn
	if p, ok := down.(*prependConn); ok {
		replay = append(replay, p.pending...)
		p.pending = nil
		down = p.Conn
	}
	return replay, down
}

// dial connects to an upstream chosen by the policy; after a failed dial
// it tries the other available upstreams, and keeps trying for
// try_duration if one is set.
func (h *Handler) dial(cx *layer4.Connection, header []byte) (net.Conn, *Upstream, error) {
	start := time.Now()
	lb := h.LoadBalancing
	var tried []*Upstream
	var lastErr error
	for {
		u := h.selectUpstream(cx.RemoteAddr(), tried)
		if u != nil && u.acquire() {
			conn, err := h.dialOne(u, header)
			if err == nil {
				return conn, u, nil
			}
			u.release()
			h.countFailure(u)
			dialFailures.WithLabelValues(h.Route, u.Dial).Inc()
			lastErr = fmt.Errorf("dialing %s: %w", u.Dial, err)
			tried = append(tried, u)
			continue
		}
		if u != nil {
			continue // filled up between selection and acquire: choose again
		}
		// nothing left to try in this round
		if lastErr == nil {
			lastErr = errors.New("no upstream available")
		}
		if time.Since(start) >= time.Duration(lb.TryDuration) {
			return nil, nil, lastErr
		}
		select {
		case <-time.After(time.Duration(lb.TryInterval)):
		case <-h.ctx.Done():
			return nil, nil, lastErr
		}
		tried = tried[:0]
	}
}

func (h *Handler) dialOne(u *Upstream, header []byte) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(h.DialTimeout))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, u.addr.Network, u.dialAddress())
	if err != nil || h.tlsConfig == nil {
		return conn, err
	}
	// mTLS out: the PROXY header goes first, in clear, then the handshake
	if len(header) > 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Duration(h.DialTimeout)))
		if _, err := conn.Write(header); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("writing the PROXY header: %w", err)
		}
		_ = conn.SetWriteDeadline(time.Time{})
	}
	cfg := h.tlsConfig
	if cfg.ServerName == "" && !u.addr.IsUnixNetwork() {
		cfg = cfg.Clone()
		cfg.ServerName = u.addr.Host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

func (h *Handler) track(pc *proxyConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns[pc] = struct{}{}
	return !h.unloaded || h.GracePeriod == 0 || time.Since(h.unloadedAt) < time.Duration(h.GracePeriod)
}

func (h *Handler) untrack(pc *proxyConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, pc)
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Handler)(nil)
	_ caddy.CleanerUpper = (*Handler)(nil)
	_ layer4.NextHandler = (*Handler)(nil)
)
