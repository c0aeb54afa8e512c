package passthrough

import (
	"cmp"
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

	peerid "github.com/trustline/trustline/modules/peer"
	"github.com/trustline/trustline/modules/tlsclient"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler proxies a layer-4 connection, untouched, to one of its
// upstreams: the bytes the matchers read (the ClientHello) are replayed
// first, behind a PROXY protocol header when configured, then the two
// connections are joined (see Copy). Connections outlive the config that
// accepted them (see grace_period).
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

	// TLS to the upstream: re-encrypts a client TLS session that
	// caddy-l4's tls handler terminated before this handler ("mTLS in,
	// mTLS out"), presenting a client identity that rotates without a
	// reload and verifying the upstream against a live trust pool.
	// Upstream sessions are resumed when the upstream allows (until the
	// identity rotates or the trust pool reloads). Default: none, the
	// bytes pass through as they came.
	TLS *UpstreamTLS `json:"tls,omitempty"`

	// How long to wait for an upstream to accept. Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// Close the connection when no byte has moved either way for this
	// long. Setting it makes the proxy copy through user space (with
	// read deadlines) instead of the kernel's splice. Default: none.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// How the bytes are copied once the connections are joined: "auto"
	// copies through a pooled 32 KiB buffer when the client or the
	// upstream is on this host (a loopback address or a Unix socket) and
	// leaves the copy to the kernel (splice(2)) otherwise; "splice" and
	// "buffered" force one way. An idle_timeout always copies through
	// the buffer. Default: auto.
	Copy string `json:"copy,omitempty"`

	// Close any connection this long after it was accepted. Default: none.
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`

	// After an admin reload or stop unloads this config, let its open
	// connections run for this long, then close them. Default: none,
	// they run until they end by themselves.
	GracePeriod caddy.Duration `json:"grace_period,omitempty"`

	ctx       caddy.Context
	logger    *zap.Logger
	ppVersion byte
	rr        atomic.Uint32
	client    *tlsclient.Client // TLS to the upstreams: identity, trust pool, pins, sessions
	stopTLS   func()

	mu         sync.Mutex
	conns      map[*proxyConn]struct{}
	unloadedAt time.Time // zero while loaded

	stopHealth chan struct{}
	healthDone chan struct{}

	// this route's metric series, looked up once
	mProxied, mDialFailed, mBytesUp, mBytesDown prometheus.Counter
	mActive                                     prometheus.Gauge
}

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
	registerMetrics(ctx)
	h.Route = cmp.Or(h.Route, "passthrough")
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
		if err := h.provisionTLS(ctx); err != nil {
			return fmt.Errorf("passthrough route %q: tls: %w", h.Route, err)
		}
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
	h.ppVersion = map[string]byte{"v1": 1, "v2": 2}[h.ProxyProtocol]
	if h.ppVersion == 0 && h.ProxyProtocol != "" {
		errs = append(errs, fmt.Errorf("proxy_protocol %q: want v1 or v2", h.ProxyProtocol))
	}
	switch h.Copy {
	case "", "auto", "splice", "buffered":
	default:
		errs = append(errs, fmt.Errorf("copy %q: want auto, splice or buffered", h.Copy))
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
	h.DialTimeout = cmp.Or(h.DialTimeout, caddy.Duration(5*time.Second))
	if hc := h.HealthChecks; hc != nil && hc.Passive != nil {
		if hc.Passive.MaxFails < 0 {
			errs = append(errs, fmt.Errorf("max_fails must not be negative"))
		}
		hc.Passive.MaxFails = cmp.Or(hc.Passive.MaxFails, 1)
	}
	if hc := h.HealthChecks; hc != nil && hc.Active != nil && (hc.Active.Port < 0 || hc.Active.Port > 65535) {
		errs = append(errs, fmt.Errorf("health check port %d is out of range", hc.Active.Port))
	}
	return errors.Join(errs...)
}

// Cleanup stops health checks and releases the upstreams; connections
// still open keep running (until the grace period, if any).
func (h *Handler) Cleanup() error {
	if h.stopTLS != nil {
		h.stopTLS()
	}
	if h.stopHealth != nil {
		close(h.stopHealth)
		<-h.healthDone
	}
	h.releaseUpstreams()
	h.mu.Lock()
	h.unloadedAt = time.Now()
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
	msg, fields := "config unloaded: open passthrough connections finish on their old route (no grace_period set)",
		[]zap.Field{zap.String("route", h.Route), zap.Int("connections", open)}
	if h.GracePeriod > 0 {
		msg = "config unloaded: open passthrough connections finish on their old route until the grace period ends"
		fields = append(fields, zap.Duration("grace_period", time.Duration(h.GracePeriod)))
	}
	h.logger.Info(msg, fields...)
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
		pc.identity = peerid.FromState(terminated)
	}
	replay, down := takeReplay(cx)
	pc.down = down
	fail := func(u *Upstream, reason string, err error) error {
		h.mDialFailed.Inc()
		pc.logDone(u, 0, 0, reason, err)
		return nil
	}

	if h.client != nil && terminated == nil {
		return fail(nil, "config_error", errors.New("tls to the upstream re-encrypts a client TLS session that caddy-l4's tls handler terminated first; this connection's was not"))
	}
	var header []byte
	if h.ppVersion != 0 {
		hdr := proxyproto.HeaderProxyFromAddrs(h.ppVersion, cx.RemoteAddr(), cx.LocalAddr())
		var err error
		if h.ProxyProtocolIdentity && terminated != nil {
			var tlvs []proxyproto.TLV
			if tlvs, err = IdentityTLVs(terminated); err == nil {
				err = hdr.SetTLVs(tlvs)
			}
		}
		if err == nil {
			header, err = hdr.Format()
		}
		if err != nil {
			return fail(nil, "proxy_protocol_error", err)
		}
	}

	up, u, err := h.dial(cx, header, pc)
	if err != nil {
		return fail(u, "dial_failed", err) // u: the last one tried, if any
	}
	defer u.release()
	pc.up = up
	if h.client != nil {
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
	if tc, ok := up.(*tlsclient.Conn); ok {
		// a TLS 1.3 upstream's refusal of our certificate comes after
		// the handshake, as its first record
		cerr = h.client.Refusal(u.Dial, tc, cerr, h.logger, pc.tlsLead()...)
	}
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
// try_duration if one is set. On failure it returns the last upstream it
// tried (nil when none was available), already released, for the log.
func (h *Handler) dial(cx *layer4.Connection, header []byte, pc *proxyConn) (net.Conn, *Upstream, error) {
	start := time.Now()
	lb := h.LoadBalancing
	var tried []*Upstream
	var lastErr error
	var last *Upstream
	for {
		u := h.selectUpstream(cx.RemoteAddr(), tried)
		if u != nil && u.acquire() {
			conn, err := h.dialOne(u, header, pc)
			if err == nil {
				return conn, u, nil
			}
			u.release()
			h.countFailure(u)
			dialFailures.WithLabelValues(h.Route, u.Dial).Inc()
			lastErr = fmt.Errorf("dialing %s: %w", u.Dial, err)
			last = u
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
			return nil, last, lastErr
		}
		select {
		case <-time.After(time.Duration(lb.TryInterval)):
		case <-h.ctx.Done():
			return nil, last, lastErr
		}
		tried = tried[:0]
	}
}

func (h *Handler) dialOne(u *Upstream, header []byte, pc *proxyConn) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(h.DialTimeout))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, u.addr.Network, u.addr.JoinHostPort(0))
	if err != nil || h.client == nil {
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
	serverName := u.addr.Host
	if u.addr.IsUnixNetwork() {
		serverName = ""
	}
	tc, err := h.client.Handshake(ctx, conn, h.client.Config(serverName), u.Dial, h.logger, pc.tlsLead()...)
	if err != nil {
		return nil, err
	}
	return tc, nil
}

// tlsLead are the first fields of the upstream TLS log lines.
func (pc *proxyConn) tlsLead() []zap.Field {
	return []zap.Field{zap.String("route", pc.h.Route), zap.String("client_addr", pc.client.String())}
}

func (h *Handler) track(pc *proxyConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns[pc] = struct{}{}
	return h.unloadedAt.IsZero() || h.GracePeriod == 0 || time.Since(h.unloadedAt) < time.Duration(h.GracePeriod)
}

func (h *Handler) untrack(pc *proxyConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, pc)
}

// UpstreamTLS is the TLS of a passthrough handler to its upstreams:
// reverse_proxy's TLS config (its fields inline: ca, server_name,
// client_certificate_file, insecure_skip_verify, curves, ...) with
// client_identity and upstream_identity, as the mtls transport has them.
type UpstreamTLS struct {
	reverseproxy.TLSConfig
	tlsclient.Settings
}

// provisionTLS loads the upstream TLS config, with session resumption.
func (h *Handler) provisionTLS(ctx caddy.Context) error {
	client, err := h.TLS.Load(ctx)
	if err != nil {
		return err
	}
	client.ResumeSessions()
	h.client = client
	h.stopTLS = client.OnChange(func(cause string) {
		fields := append([]zap.Field{zap.String("route", h.Route), zap.String("cause", cause)}, client.Current()...)
		h.logger.Info("upstream TLS sessions renewed: new connections present the current identity, open ones keep theirs", fields...)
	})
	h.logger.Info("upstream TLS ready", append([]zap.Field{zap.String("route", h.Route)}, client.LogFields()...)...)
	if client.Insecure() {
		h.logger.Warn("insecure_skip_verify: upstreams' certificates are NOT verified", zap.String("route", h.Route))
	}
	return nil
}

// Load loads the client of t: keystore identity, live trust pool and
// pins through tlsclient, the rest (curves, static roots, server name)
// through reverse_proxy's own code.
func (t *UpstreamTLS) Load(ctx caddy.Context) (*tlsclient.Client, error) {
	client, err := tlsclient.Load(ctx, &t.TLSConfig, &t.Settings)
	if err != nil {
		return nil, err
	}
	cfg, err := t.MakeTLSClientConfig(ctx)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = new(tls.Config)
	}
	client.Apply(cfg)
	return client, nil
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Handler)(nil)
	_ caddy.CleanerUpper = (*Handler)(nil)
	_ layer4.NextHandler = (*Handler)(nil)
)
