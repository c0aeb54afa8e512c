package peer

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(Authorize{})
	caddy.RegisterModule(Publish{})
}

// Authorize answers 403 Forbidden to a request whose verified client
// identity does not satisfy the patterns, or that has no verified client
// certificate at all, and logs each denial (at INFO, logger
// http.handlers.peer_authorize) with the identity and the rule that did not
// match. Allowed requests go on to the next handler.
//
// The 403 is an error (caddyhttp.Error), so `handle_errors` can shape the
// response. With `shadow`, it denies nothing and logs every request it
// would have denied.
type Authorize struct {
	Patterns

	// Shadow logs what would be denied and denies nothing. Default false.
	Shadow bool `json:"shadow,omitempty"`

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Authorize) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.peer_authorize",
		New: func() caddy.Module { return new(Authorize) },
	}
}

// Provision compiles the patterns, and warns when the site never asks
// for a client certificate.
func (a *Authorize) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	registerMetrics(ctx)
	if err := a.Compile(); err != nil {
		return fmt.Errorf("peer_authorize: %w", err)
	}
	consequence := "every request is refused (403)"
	if a.Shadow {
		consequence = "every request is logged as one it would refuse (403)"
	}
	warnNoClientCert(ctx, a.logger, "peer_authorize", consequence)
	return nil
}

// ServeHTTP denies or passes the request.
func (a *Authorize) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	d := a.Decide(r)
	id, failed := d.Identity, d.Failed
	if d.Allowed {
		return next.ServeHTTP(w, r)
	}
	msg, outcome := "denied", "refused"
	if a.Shadow {
		msg, outcome = "shadow: would deny", "shadow"
	}
	peerDecisions.WithLabelValues("authorize", outcome).Inc()
	if ce := a.logger.Check(zap.InfoLevel, msg); ce != nil {
		fields := append(identityFields(id), zap.String("reason", d.Reason))
		if id == nil {
			detail := "no client certificate"
			if d.Reason == verify.ReasonUnverified {
				detail = "client certificate not verified (client_auth mode request/require, or no trust_pool)"
			}
			fields = append(fields, zap.String("detail", detail))
		} else {
			fields = append(fields, a.ruleFields(id, failed)...)
		}
		ce.Write(append(fields,
			zap.String("remote_ip", r.RemoteAddr),
			zap.String("host", r.Host),
			zap.String("method", r.Method),
			zap.String("uri", r.RequestURI),
		)...)
	}
	if a.Shadow {
		return next.ServeHTTP(w, r)
	}
	return caddyhttp.Error(http.StatusForbidden, errDenied)
}

var errDenied = errors.New("peer_authorize: client identity not allowed")

// UnmarshalCaddyfile sets up the handler. Syntax:
//
//	peer_authorize <pattern...>
//	peer_authorize [<pattern...>] {
//		spiffe_id    <spiffe://td/path...>
//		trust_domain <td...>
//		dns | uri | email | ip | subject | cn | o | ou | issuer | fingerprint | spki <values...>
//		shadow
//	}
//
// Patterns are those of the `peer` matcher.
func (a *Authorize) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const directive = "peer_authorize"
	shadow := func() (bool, error) {
		if d.Val() != "shadow" {
			return false, nil
		}
		return true, parseShadow(d, directive, &a.Shadow)
	}
	if err := a.parseLines(d, directive, shadow, "shadow"); err != nil {
		return err
	}
	return a.validate(d, directive)
}

// Publish makes the verified peer identity available to the rest of the
// route as {peer.*} placeholders and adds a "peer" object to the access
// log. The other peer handlers and the peer matcher do the same for the
// requests they see; this handler is for routes that use none of them.
type Publish struct{}

// CaddyModule returns the Caddy module information.
func (Publish) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.peer_identity",
		New: func() caddy.Module { return new(Publish) },
	}
}

// ServeHTTP publishes the identity and calls the next handler.
func (Publish) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	publish(r)
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile sets up the handler. Syntax:
//
//	peer_identity
func (*Publish) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.Errf("peer_identity: takes no argument, got %q", d.Val())
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("peer_identity: takes no block")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Authorize)(nil)
	_ caddyhttp.MiddlewareHandler = (*Authorize)(nil)
	_ caddyfile.Unmarshaler       = (*Authorize)(nil)
	_ caddyhttp.MiddlewareHandler = (*Publish)(nil)
	_ caddyfile.Unmarshaler       = (*Publish)(nil)
)
