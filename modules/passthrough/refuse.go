package passthrough

import (
	"cmp"
	"fmt"
	"io"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(Refuse))
}

// Refuse ends a TLS connection at layer 4: it answers the ClientHello
// with a fatal TLS alert, so the client reports a clear reason (for
// example "unrecognized name"), and closes the connection. It logs one
// line per refusal and counts it in the connections metric under its
// route with outcome "refused".
type Refuse struct {
	// Name of the route in logs and metrics. Default: "refused".
	Route string `json:"route,omitempty"`

	// The alert to send: unrecognized_name, handshake_failure,
	// protocol_version, access_denied, or none to close without one.
	// Default: handshake_failure.
	Alert string `json:"alert,omitempty"`

	alertCode byte
	logger    *zap.Logger
}

var alertCodes = map[string]byte{
	"handshake_failure": 40,
	"access_denied":     49,
	"protocol_version":  70,
	"unrecognized_name": 112,
	"none":              0,
}

func alertCode(name string) (byte, error) {
	if code, ok := alertCodes[name]; ok {
		return code, nil
	}
	return 0, fmt.Errorf("refuse: unknown alert %q (want unrecognized_name, handshake_failure, protocol_version, access_denied or none)", name)
}

// CaddyModule returns the Caddy module information.
func (*Refuse) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.refuse",
		New: func() caddy.Module { return new(Refuse) },
	}
}

// Provision checks the alert name.
func (r *Refuse) Provision(ctx caddy.Context) error {
	r.logger = moduleLogger(ctx)
	registerMetrics(ctx)
	r.Route = cmp.Or(r.Route, "refused")
	r.Alert = cmp.Or(r.Alert, "handshake_failure")
	var err error
	r.alertCode, err = alertCode(r.Alert)
	return err
}

// Handle sends the alert and closes the connection.
func (r *Refuse) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	connections.WithLabelValues(r.Route, "refused").Inc()
	if ce := r.logger.Check(zap.InfoLevel, "passthrough connection refused"); ce != nil {
		fields := []zap.Field{
			zap.String("client_addr", cx.RemoteAddr().String()),
			zap.String("route", r.Route),
			zap.String("alert", r.Alert),
		}
		if h := GetClientHello(cx); h != nil {
			fields = append(fields, zap.String("server_name", h.ServerName), zap.Strings("alpn", h.ALPN),
				zap.String("max_version", versionName(h.MaxVersion())))
		}
		ce.Write(fields...)
	}
	if r.alertCode == 0 {
		return nil
	}
	_ = cx.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := cx.Write([]byte{21, 3, 3, 0, 2, 2, r.alertCode}); err != nil {
		return nil
	}
	// Half-close and drain briefly: closing with unread bytes would reset
	// the connection and the client might never see the alert.
	if cw, ok := cx.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = cx.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(cx, 64<<10))
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens, for use
// in caddy-l4's own Caddyfile syntax. Syntax:
//
//	refuse [<alert>]
func (r *Refuse) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // handler name
	if d.NextArg() {
		r.Alert = d.Val()
		if _, err := alertCode(r.Alert); err != nil {
			return d.Errf("%v", err)
		}
	}
	if d.NextArg() {
		return d.Errf("refuse: takes at most one alert name")
	}
	if d.NextBlock(0) {
		return d.Errf("refuse: takes no block")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Refuse)(nil)
	_ layer4.NextHandler    = (*Refuse)(nil)
	_ caddyfile.Unmarshaler = (*Refuse)(nil)
)
