package passthrough

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(MatchClientHello))
}

// MatchClientHello matches TLS connections by their ClientHello: server
// name (SNI), offered ALPN protocols and offered versions. It reads the
// whole ClientHello, once per connection, however the client split it
// (up to 16 KiB, within the layer4 matching timeout), writes nothing, and
// replays the bytes to whatever handles the connection next. All the
// fields set must match (AND); with none set, any TLS ClientHello does.
//
// Unlike caddy-l4's `tls` matcher, which parses only what the first read
// returned, it never answers "need more bytes" to the route list, so a
// catch-all route after it cannot steal a large or slow ClientHello.
type MatchClientHello struct {
	// Server names: exact ("db.example.com") or a wildcard of one
	// leftmost label ("*.example.com"), compared without regard to case.
	// Empty: any name, or none.
	SNI []string `json:"sni,omitempty"`

	// Application protocols: matches when the client offers at least one
	// of them. Empty: any offer, or none.
	ALPN []string `json:"alpn,omitempty"`

	// Matches only when the highest version the client offers is at most
	// this one: "tls1.0", "tls1.1", "tls1.2" or "tls1.3". Empty: any.
	// With "tls1.2" it finds clients that cannot speak TLS 1.3.
	MaxVersion string `json:"max_version,omitempty"`

	// When set, matches only ClientHellos whose server name Caddy's tls
	// app can (true) or cannot (false) serve: a certificate it loaded or
	// manages, a name in an automation policy, or any name when on-demand
	// TLS is on. A ClientHello without SNI counts as not served. Used to
	// send unknown names to a default route without stealing the names of
	// Caddy's own sites. Unset: not checked.
	ServedByCaddy *bool `json:"served_by_caddy,omitempty"`

	names      *nameSet
	maxVersion uint16
	tlsApp     *caddytls.TLS
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*MatchClientHello) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.matchers.clienthello",
		New: func() caddy.Module { return new(MatchClientHello) },
	}
}

// Provision validates the patterns, checks them against the sites of
// the HTTP server it routes in front of (checkSites), and finds the tls
// app when needed.
func (m *MatchClientHello) Provision(ctx caddy.Context) error {
	m.logger = moduleLogger(ctx)
	registerMetrics(ctx)
	if err := m.compile(); err != nil {
		return fmt.Errorf("clienthello matcher: %w", err)
	}
	if err := m.checkSites(ctx); err != nil {
		return err
	}
	if m.ServedByCaddy != nil {
		app, err := ctx.App("tls")
		if err != nil {
			return fmt.Errorf("clienthello matcher: served_by_caddy needs the tls app: %w", err)
		}
		m.tlsApp = app.(*caddytls.TLS)
	}
	return nil
}

func (m *MatchClientHello) compile() error {
	if len(m.SNI) > 0 {
		set, err := newNameSet(m.SNI)
		if err != nil {
			return fmt.Errorf("sni: %w", err)
		}
		m.names = set
	}
	for _, p := range m.ALPN {
		if p == "" || len(p) > 255 {
			return fmt.Errorf("alpn: protocol name %q must be 1 to 255 bytes", p)
		}
	}
	if m.MaxVersion != "" {
		v, ok := parseVersionName(m.MaxVersion)
		if !ok {
			return fmt.Errorf("max_version %q: want tls1.0, tls1.1, tls1.2 or tls1.3", m.MaxVersion)
		}
		m.maxVersion = v
	}
	return nil
}

// Match reads the ClientHello (once per connection) and tests it.
func (m *MatchClientHello) Match(cx *layer4.Connection) (bool, error) {
	res := readHello(cx, m.logger)
	if res.hello == nil {
		return false, res.fatal
	}
	return m.matches(res.hello), nil
}

func (m *MatchClientHello) matches(h *ClientHello) bool {
	if m.names != nil && !m.names.match(h.ServerName) {
		return false
	}
	if len(m.ALPN) > 0 && !slices.ContainsFunc(m.ALPN, h.OffersALPN) {
		return false
	}
	if m.maxVersion != 0 && h.MaxVersion() > m.maxVersion {
		return false
	}
	if m.ServedByCaddy != nil && servedByCaddy(m.tlsApp, h) != *m.ServedByCaddy {
		return false
	}
	return true
}

// servedByCaddy reports whether Caddy's tls app would present a
// certificate of its own for the ClientHello's name. ACME TLS-ALPN-01
// challenges (ALPN acme-tls/1) always belong to Caddy: the certificate
// they are for does not exist yet.
func servedByCaddy(app *caddytls.TLS, h *ClientHello) bool {
	name := h.ServerName
	if app == nil || name == "" {
		return false
	}
	if h.OffersALPN("acme-tls/1") || app.HasCertificateForSubject(name) {
		return true
	}
	if app.Automation == nil {
		return false
	}
	for _, ap := range app.Automation.Policies {
		if app.Automation.OnDemand != nil && ap.OnDemand && len(ap.SubjectsRaw) == 0 {
			return true // on-demand TLS for any name
		}
		for _, subj := range ap.SubjectsRaw {
			if matchPattern(strings.ToLower(subj), name) {
				return true
			}
		}
	}
	return false
}

// helloResult is the outcome of reading one connection's ClientHello,
// kept in the connection's variables.
type helloResult struct {
	hello *ClientHello // nil: not a ClientHello we can route
	fatal error        // set when that ends the connection (a timeout)
}

const helloVar = "trustline.clienthello"

// GetClientHello returns the ClientHello the clienthello matcher read on
// this connection, or nil.
func GetClientHello(cx *layer4.Connection) *ClientHello {
	if res, ok := cx.GetVar(helloVar).(*helloResult); ok {
		return res.hello
	}
	return nil
}

// readHello reads and parses the connection's ClientHello the first time
// it is asked, and returns the stored result afterwards. Bytes the layer4
// routing already prefetched are used first; the rest is read straight
// from the connection (under the routing's read deadline) and put back in
// front of it.
func readHello(cx *layer4.Connection, logger *zap.Logger) *helloResult {
	if res, ok := cx.GetVar(helloVar).(*helloResult); ok {
		return res
	}
	pre := cx.MatchingBytes()
	buf := make([]byte, len(pre), max(2048, len(pre)+512))
	copy(buf, pre)
	hello, buf, err := ReadClientHello(cx.Conn, buf)
	if extra := buf[len(pre):]; len(extra) > 0 {
		cx.Conn = &prependConn{Conn: cx.Conn, pending: extra}
	}
	res := &helloResult{hello: hello}
	if err != nil {
		var reason string
		reason, res.fatal = classifyHelloError(err, len(buf))
		helloErrors.WithLabelValues(reason).Inc()
		remote := cx.RemoteAddr().String()
		switch {
		case reason == "closed_early" && len(buf) == 0:
			// load balancer TCP health checks look like this
			logger.Debug("connection closed before sending anything", zap.String("client_addr", remote))
		case res.fatal != nil:
			// caddy-l4 logs the returned error and closes the connection
		default:
			logger.Info("no routable ClientHello", zap.String("client_addr", remote),
				zap.String("reason", reason), zap.Int("bytes", len(buf)), zap.Error(err))
		}
	} else if repl, ok := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("l4.tls.server_name", hello.ServerName)
		repl.Set("l4.tls.version", hello.MaxVersion())
		repl.Set("l4.tls.alpn", strings.Join(hello.ALPN, ","))
	}
	cx.SetVar(helloVar, res)
	return res
}

// classifyHelloError gives the metric's reason for a failed read of n
// bytes, and the error that ends the connection for a timeout or a
// network error (nil for the rest: matching goes on).
func classifyHelloError(err error, n int) (reason string, fatal error) {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotTLS):
		return "not_tls", nil
	case errors.Is(err, ErrHelloTooLarge):
		return "too_large", nil
	case errors.Is(err, ErrMalformedHello):
		return "malformed", nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout", fmt.Errorf("passthrough: no complete ClientHello within the matching timeout (%d bytes received)", n)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed_early", nil
	case errors.As(err, &ne):
		return "read_error", fmt.Errorf("passthrough: reading the ClientHello: %w", err)
	}
	return "read_error", nil
}

// prependConn replays bytes read while matching before reading on.
type prependConn struct {
	net.Conn
	pending []byte
}

func (c *prependConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection when the underlying one can.
func (c *prependConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// UnmarshalCaddyfile sets up the matcher from Caddyfile tokens, for use
// in caddy-l4's own Caddyfile syntax. Syntax:
//
//	clienthello [<server names...>] {
//		sni <server names...>
//		alpn <protocols...>
//		max_version tls1.0|tls1.1|tls1.2|tls1.3
//		served_by_caddy [true|false]
//	}
func (m *MatchClientHello) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // matcher name
	m.SNI = append(m.SNI, d.RemainingArgs()...)
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] && opt != "sni" && opt != "alpn" {
			return d.Errf("clienthello: duplicate option '%s'", opt)
		}
		seen[opt] = true
		switch opt {
		case "sni", "alpn":
			list, what := &m.SNI, "server name"
			if opt == "alpn" {
				list, what = &m.ALPN, "protocol"
			}
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("clienthello: %s needs at least one %s", opt, what)
			}
			*list = append(*list, args...)
		case "max_version":
			if !d.NextArg() {
				return d.Errf("clienthello: max_version needs a version (tls1.2, ...)")
			}
			m.MaxVersion = d.Val()
			if d.NextArg() {
				return d.Errf("clienthello: max_version takes one version")
			}
		case "served_by_caddy":
			v := true
			if d.NextArg() {
				if d.Val() != "true" && d.Val() != "false" {
					return d.Errf("clienthello: served_by_caddy takes true or false, not %q", d.Val())
				}
				v = d.Val() == "true"
			}
			m.ServedByCaddy = &v
		default:
			return d.Errf("clienthello: unknown option '%s' (want sni, alpn, max_version or served_by_caddy)", opt)
		}
	}
	if err := m.compile(); err != nil {
		return d.Errf("clienthello: %v", err)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*MatchClientHello)(nil)
	_ layer4.ConnMatcher    = (*MatchClientHello)(nil)
	_ caddyfile.Unmarshaler = (*MatchClientHello)(nil)
)
