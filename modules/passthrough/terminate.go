package passthrough

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(new(TerminateTLS))
}

// TerminateTLS terminates TLS on a layer-4 route like caddy-l4's `tls`
// handler (same connection policies, JSON and connection variables), but
// builds its tls.Config once per config load so that sessions resume,
// bounds the handshake (handshake_timeout), and logs a failed handshake
// as one INFO line. Handshakes are counted in
// trustline_l4_tls_handshakes_total by result (full, resumed, failed).
// README.md, "terminate_tls", says why.
type TerminateTLS struct {
	// The connection policies, as in caddy-l4's tls handler and Caddy's
	// tls app: certificate selection, client_auth (with trust pools and
	// verifiers such as `peer` or `live_trust`), protocols, ALPN... The
	// first policy whose matchers match the ClientHello is used. Default:
	// one empty policy (Caddy's defaults, certificates from the tls app).
	ConnectionPolicies caddytls.ConnectionPolicies `json:"connection_policies,omitempty"`

	// How long the client has to complete the handshake. Default: 10s.
	HandshakeTimeout caddy.Duration `json:"handshake_timeout,omitempty"`

	// Issue no session tickets (nginx's `ssl_session_tickets off`,
	// HAProxy's `no-tls-tickets`): every connection makes a full
	// handshake. Default false: tickets on, except where a policy has
	// client_auth (Caddy turns them off there).
	DisableSessionTickets bool `json:"disable_session_tickets,omitempty"`

	cfg    *tls.Config
	logger *zap.Logger
	key    string // its configuration, for InForce
}

// CaddyModule returns the Caddy module information.
func (*TerminateTLS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.terminate_tls",
		New: func() caddy.Module { return new(TerminateTLS) },
	}
}

var tlsHandshakes = material.NewCounterVec("trustline_l4_tls_handshakes_total",
	"TLS handshakes of layer-4 terminate_tls handlers, by result (full, resumed, failed).", "result")

// Provision provisions the connection policies and builds the one TLS
// config every connection of this handler shares.
func (t *TerminateTLS) Provision(ctx caddy.Context) error {
	t.key = configKey(t) // before anything is filled in
	t.logger = ctx.Logger()
	registerMetrics(ctx)
	if t.HandshakeTimeout < 0 {
		return fmt.Errorf("terminate_tls: handshake_timeout must not be negative, got %s", time.Duration(t.HandshakeTimeout))
	}
	t.HandshakeTimeout = cmp.Or(t.HandshakeTimeout, caddy.Duration(10*time.Second))
	if len(t.ConnectionPolicies) == 0 {
		t.ConnectionPolicies = caddytls.ConnectionPolicies{new(caddytls.ConnectionPolicy)}
	}
	if err := t.ConnectionPolicies.Provision(ctx); err != nil {
		return fmt.Errorf("terminate_tls: setting up connection policies: %w", err)
	}
	if t.DisableSessionTickets {
		for _, p := range t.ConnectionPolicies {
			if p.TLSConfig != nil {
				p.TLSConfig.SessionTicketsDisabled = true
			}
		}
	}
	cfg := t.ConnectionPolicies.TLSConfig(ctx)
	cfg.SessionTicketsDisabled = t.DisableSessionTickets
	choose := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		// hello.Conn is the *layer4.Connection given to tls.Server:
		// remember the ClientHello there, as caddy-l4's handler does
		if cx, ok := hello.Conn.(*layer4.Connection); ok {
			caddyinternals.AppendClientHello(cx, hello)
		}
		return choose(hello)
	}
	t.cfg = cfg
	t.register()
	return nil
}

// Handle performs the handshake and passes the decrypted connection on.
func (t *TerminateTLS) Handle(cx *layer4.Connection, next layer4.Handler) error {
	_ = cx.SetDeadline(time.Now().Add(time.Duration(t.HandshakeTimeout)))
	conn := tls.Server(cx, t.cfg)
	if err := conn.Handshake(); err != nil {
		// logged here, once, at INFO (a client's failure, as nginx logs
		// it), rather than returned for caddy-l4 to log at ERROR; the
		// connection is closed when the handler returns
		tlsHandshakes.WithLabelValues("failed").Inc()
		if ce := t.logger.Check(zap.InfoLevel, "TLS handshake failed"); ce != nil {
			serverName := ""
			if hellos := l4tls.GetClientHelloInfos(cx); len(hellos) > 0 {
				serverName = hellos[len(hellos)-1].ServerName
			}
			ce.Write(zap.String("remote", cx.RemoteAddr().String()), zap.String("server_name", serverName), zap.Error(err))
		}
		return nil
	}
	_ = cx.SetDeadline(time.Time{})
	state := conn.ConnectionState()
	if state.DidResume {
		tlsHandshakes.WithLabelValues("resumed").Inc()
	} else {
		tlsHandshakes.WithLabelValues("full").Inc()
	}
	if ce := t.logger.Check(zap.DebugLevel, "terminated TLS"); ce != nil {
		ce.Write(zap.String("remote", cx.RemoteAddr().String()), zap.String("server_name", state.ServerName),
			zap.Bool("resumed", state.DidResume), zap.String("alpn", state.NegotiatedProtocol))
	}
	caddyinternals.AppendConnectionState(cx, &state)
	if len(state.PeerCertificates) > 0 {
		// a trust change (the pool, a CRL) reaches this connection: when
		// its peer's verification no longer holds, it is closed
		verify.TrackConn(conn)
		defer verify.UntrackConn(conn)
	}
	// a new cx wraps the TLS connection, so that reads do not recurse
	// into the connection the TLS conn itself reads from
	return next.Handle(cx.Wrap(conn))
}

// UnmarshalCaddyfile sets up the handler. Syntax:
//
//	terminate_tls
//	terminate_tls {
//		handshake_timeout <duration>
//		session_tickets   on|off
//		connection_policy {
//			# Caddy's connection policy options: alpn, cert_selection,
//			# client_auth { ... }, curves, default_sni, match { ... },
//			# protocols, ...
//		}
//		connection_policy { ... }
//	}
func (t *TerminateTLS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const directive = "terminate_tls"
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("%s: unexpected argument %q; options go in a block", directive, d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "handshake_timeout":
			if t.HandshakeTimeout != 0 {
				return d.Errf("%s: duplicate option 'handshake_timeout'", directive)
			}
			if !d.NextArg() || d.CountRemainingArgs() > 0 {
				return d.Errf("%s: handshake_timeout takes exactly one duration", directive)
			}
			v, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("%s: handshake_timeout %q: %v", directive, d.Val(), err)
			}
			if v <= 0 {
				return d.Errf("%s: handshake_timeout must be positive, got %q", directive, d.Val())
			}
			t.HandshakeTimeout = caddy.Duration(v)
		case "session_tickets":
			if !d.NextArg() || d.CountRemainingArgs() > 0 || (d.Val() != "on" && d.Val() != "off") {
				return d.Errf("%s: session_tickets takes on or off", directive)
			}
			t.DisableSessionTickets = d.Val() == "off"
		case "connection_policy":
			cp := new(caddytls.ConnectionPolicy)
			if err := cp.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return fmt.Errorf("%s: connection_policy: %w", directive, err)
			}
			t.ConnectionPolicies = append(t.ConnectionPolicies, cp)
		default:
			return d.Errf("%s: unknown option '%s' (want handshake_timeout, session_tickets or connection_policy)", directive, opt)
		}
	}
	return nil
}

// TLSConnectionPolicies returns the handler's connection policies, so
// that a client_auth verifier provisioned in them finds its policy
// (caddyinternals.VerifierPolicy).
func (t *TerminateTLS) TLSConnectionPolicies() caddytls.ConnectionPolicies {
	return t.ConnectionPolicies
}

// Interface guards
var (
	_ caddyinternals.PolicyHolder = (*TerminateTLS)(nil)
	_ caddy.Provisioner           = (*TerminateTLS)(nil)
	_ caddy.CleanerUpper          = (*TerminateTLS)(nil)
	_ caddyfile.Unmarshaler       = (*TerminateTLS)(nil)
	_ layer4.NextHandler          = (*TerminateTLS)(nil)
)
