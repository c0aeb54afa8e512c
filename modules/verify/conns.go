package verify

import (
	"crypto/tls"
	"net"
	"net/http"
	"runtime"
	"sync"
	"weak"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// A trust change reaches open connections: crypto/tls verifies a peer once
// and Caddy's HTTP servers have no maximum connection age, so a keep-alive
// client would keep its access after a revocation. Connections are tracked
// from their first request to their close, and RecheckConns closes those
// whose verdict no longer holds; peer.FromState re-checks on every read
// too (HTTP/3, outside Caddy's connection hooks, included).

// tracked holds the connections being tracked (a sync.Map: on HTTP/1.1
// every request of a tracked connection looks it up, and a hit takes no
// lock).
var tracked sync.Map // *tls.Conn -> struct{}

// TrackConn tracks c, a TLS connection whose handshake is complete, until
// Untrack. Tracking a tracked connection again does nothing.
func TrackConn(c *tls.Conn) {
	if _, ok := tracked.Load(c); !ok { // a hit writes nothing
		tracked.Store(c, struct{}{})
	}
}

// UntrackConn stops tracking c.
func UntrackConn(c *tls.Conn) { tracked.Delete(c) }

// recheckMu makes re-check walks one at a time: a burst of changes (the
// sources of one reload) gives walks in turn, never in parallel.
var recheckMu sync.Mutex

// RecheckConns closes (and logs) every tracked connection whose verdict
// no longer holds. Material sources call it, in a goroutine, after a
// change.
func RecheckConns(logger *zap.Logger) {
	recheckMu.Lock()
	defer recheckMu.Unlock()
	tracked.Range(func(k, _ any) bool {
		recheckConn(k.(*tls.Conn), logger)
		return true
	})
}

func recheckConn(c *tls.Conn, logger *zap.Logger) {
	cs := c.ConnectionState()
	if len(cs.PeerCertificates) == 0 {
		return
	}
	rec := Lookup(cs.PeerCertificates[0].Raw)
	if rec == nil {
		return
	}
	err := rec.Recheck()
	if err == nil {
		return
	}
	leaf := rec.Chain[0]
	logger.Info("connection closed: its peer's verification no longer holds",
		zap.String("remote_addr", c.RemoteAddr().String()),
		zap.String("subject", leaf.Subject.String()),
		zap.String("serial", material.SerialString(leaf)),
		zap.String("reason", ReasonOf(err)),
		zap.Error(err))
	CountVerdict("recheck", VerdictRefused, ReasonOf(err))
	UntrackConn(c)
	_ = c.Close()
}

// trackedServers are the HTTP servers whose connections are tracked, so
// that each config's server gets one hook however many verifiers ask.
var trackedServers sync.Map // weak.Pointer[caddyhttp.Server] -> struct{}

// TrackHTTPServer tracks, through Caddy's connection-state hook, the TLS
// connections of the HTTP server whose connection policies ctx provisions
// (caddyhttp.ServerCtxKey). Verifiers call it in Provision; outside an
// HTTP server it does nothing (terminate_tls tracks its own).
func TrackHTTPServer(ctx caddy.Context) {
	if ctx.Context == nil {
		return
	}
	srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv == nil {
		return
	}
	if _, loaded := trackedServers.LoadOrStore(weak.Make(srv), struct{}{}); loaded {
		return
	}
	runtime.AddCleanup(srv, func(k weak.Pointer[caddyhttp.Server]) { trackedServers.Delete(k) }, weak.Make(srv))
	srv.RegisterConnState(func(c net.Conn, state http.ConnState) {
		tc, ok := c.(*tls.Conn)
		if !ok {
			return
		}
		switch state {
		case http.StateActive:
			TrackConn(tc)
		case http.StateClosed, http.StateHijacked:
			UntrackConn(tc)
		}
	})
}
