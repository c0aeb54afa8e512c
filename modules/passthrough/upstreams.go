package passthrough

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Upstream is one backend of a passthrough route.
type Upstream struct {
	// The backend's network address: host:port for TCP, or a Caddy
	// network address such as unix//run/app.sock. Required.
	Dial string `json:"dial"`

	// The most connections this proxy keeps open to the backend at once,
	// counted across config reloads; a full backend is skipped by load
	// balancing. Default: 0, no limit.
	MaxConnections int `json:"max_connections,omitempty"`

	addr caddy.NetworkAddress
	peer *peer
}

// peer is the state of one backend address, shared by every config that
// names it (through peers), so connection counts and health survive
// admin reloads.
type peer struct {
	conns     atomic.Int64
	fails     atomic.Int64
	unhealthy atomic.Bool
}

var peers = caddy.NewUsagePool()

// LoadBalancing chooses among a route's upstreams.
type LoadBalancing struct {
	// How to choose: random (the default), round_robin, least_conn
	// (fewest open connections, ties broken at random), first (the first
	// available in order, for fail-over) or ip_hash (by client IP).
	Policy string `json:"policy,omitempty"`

	// How long to keep trying when every upstream failed to connect or
	// is unavailable. Default: 0, every available upstream is tried
	// once and the connection is then closed.
	TryDuration caddy.Duration `json:"try_duration,omitempty"`

	// How long to wait between rounds of tries within try_duration.
	// Default: 250ms.
	TryInterval caddy.Duration `json:"try_interval,omitempty"`
}

// HealthChecks mark upstreams down and up.
type HealthChecks struct {
	// Active checks connect to every upstream periodically.
	Active *ActiveHealthChecks `json:"active,omitempty"`
	// Passive checks count failed dials.
	Passive *PassiveHealthChecks `json:"passive,omitempty"`
}

// ActiveHealthChecks open a TCP connection to each upstream (and close it
// at once): an upstream that does not accept is down until it does.
type ActiveHealthChecks struct {
	// Port to check instead of the upstream's own. Default: its own.
	Port int `json:"port,omitempty"`
	// Time between checks. Default: 30s.
	Interval caddy.Duration `json:"interval,omitempty"`
	// How long a check may take to connect. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// PassiveHealthChecks take an upstream out of rotation after failed
// dials.
type PassiveHealthChecks struct {
	// How long a failed dial counts against an upstream. Required to
	// enable passive checks.
	FailDuration caddy.Duration `json:"fail_duration,omitempty"`
	// Failed dials within fail_duration after which the upstream is down.
	// Default: 1.
	MaxFails int `json:"max_fails,omitempty"`
}

func validPolicy(p string) bool {
	return p == "" || slices.Contains([]string{"random", "round_robin", "least_conn", "first", "ip_hash"}, p)
}

// provisionUpstreams parses the addresses and attaches the shared peers.
func (h *Handler) provisionUpstreams() error {
	if len(h.Upstreams) == 0 {
		return fmt.Errorf("no upstreams")
	}
	for i, u := range h.Upstreams {
		if u.Dial == "" {
			return fmt.Errorf("upstream %d: dial address is required", i)
		}
		addr, err := caddy.ParseNetworkAddress(u.Dial)
		if err != nil {
			return fmt.Errorf("upstream %q: %w", u.Dial, err)
		}
		if addr.PortRangeSize() != 1 {
			return fmt.Errorf("upstream %q: give exactly one port", u.Dial)
		}
		if !addr.IsUnixNetwork() && addr.StartPort == 0 {
			return fmt.Errorf("upstream %q: a port is required", u.Dial)
		}
		if u.MaxConnections < 0 {
			return fmt.Errorf("upstream %q: max_connections must not be negative", u.Dial)
		}
		u.addr = addr
		val, _ := peers.LoadOrStore(addr.String(), new(peer))
		u.peer = val.(*peer)
	}
	return nil
}

func (h *Handler) releaseUpstreams() {
	for _, u := range h.Upstreams {
		if u.peer != nil {
			_, _ = peers.Delete(u.addr.String())
		}
	}
}

// available reports whether u may take a new connection now.
func (h *Handler) available(u *Upstream) bool {
	if u.peer.unhealthy.Load() {
		return false
	}
	if p := h.passive(); p != nil && u.peer.fails.Load() >= int64(p.MaxFails) {
		return false
	}
	return u.MaxConnections == 0 || u.peer.conns.Load() < int64(u.MaxConnections)
}

func (h *Handler) passive() *PassiveHealthChecks {
	if h.HealthChecks == nil || h.HealthChecks.Passive == nil || h.HealthChecks.Passive.FailDuration <= 0 {
		return nil
	}
	return h.HealthChecks.Passive
}

// acquire counts a connection on u, unless that would go over its limit.
func (u *Upstream) acquire() bool {
	for {
		c := u.peer.conns.Load()
		if u.MaxConnections > 0 && c >= int64(u.MaxConnections) {
			return false
		}
		if u.peer.conns.CompareAndSwap(c, c+1) {
			return true
		}
	}
}

func (u *Upstream) release() { u.peer.conns.Add(-1) }

// selectUpstream picks an available upstream not in skip, by policy.
func (h *Handler) selectUpstream(client net.Addr, skip []*Upstream) *Upstream {
	ok := func(u *Upstream) bool { return !slices.Contains(skip, u) && h.available(u) }
	if h.LoadBalancing.Policy == "round_robin" {
		n := uint32(len(h.Upstreams))
		for range n {
			if u := h.Upstreams[h.rr.Add(1)%n]; ok(u) {
				return u
			}
		}
		return nil
	}
	var buf [8]*Upstream
	avail := buf[:0]
	for _, u := range h.Upstreams {
		if ok(u) {
			avail = append(avail, u)
		}
	}
	if len(avail) == 0 {
		return nil
	}
	switch h.LoadBalancing.Policy {
	case "first":
		return avail[0]
	case "least_conn":
		// the fewest open connections, ties broken at random
		best, bestConns, ties := avail[0], avail[0].peer.conns.Load(), 1
		for _, u := range avail[1:] {
			switch c := u.peer.conns.Load(); {
			case c < bestConns:
				best, bestConns, ties = u, c, 1
			case c == bestConns:
				ties++
				if rand.IntN(ties) == 0 {
					best = u
				}
			}
		}
		return best
	case "ip_hash":
		host := client.String()
		if ta, isTCP := client.(*net.TCPAddr); isTCP {
			host = ta.IP.String()
		}
		f := fnv.New32a()
		_, _ = f.Write([]byte(host))
		return avail[f.Sum32()%uint32(len(avail))]
	}
	return avail[rand.IntN(len(avail))] // random
}

// countFailure remembers a failed dial for fail_duration.
func (h *Handler) countFailure(u *Upstream) {
	p := h.passive()
	if p == nil {
		return
	}
	u.peer.fails.Add(1)
	time.AfterFunc(time.Duration(p.FailDuration), func() { u.peer.fails.Add(-1) })
}

// activeHealthChecker runs until stop is closed.
func (h *Handler) activeHealthChecker(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	defer func() {
		if r := recover(); r != nil {
			h.logger.Error("active health checker panicked", zap.Any("panic", r))
		}
	}()
	a := h.HealthChecks.Active
	ticker := time.NewTicker(time.Duration(a.Interval))
	defer ticker.Stop()
	for {
		for _, u := range h.Upstreams {
			h.checkUpstream(u, a)
		}
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
	}
}

func (h *Handler) checkUpstream(u *Upstream, a *ActiveHealthChecks) {
	addr := u.addr
	if a.Port != 0 && !addr.IsUnixNetwork() {
		addr.StartPort, addr.EndPort = uint(a.Port), uint(a.Port)
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Duration(a.Timeout))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, addr.Network, addr.JoinHostPort(0))
	if conn != nil {
		_ = conn.Close()
	}
	if h.ctx.Err() != nil {
		return // config unloading
	}
	healthy := err == nil
	if was := !u.peer.unhealthy.Swap(!healthy); was != healthy {
		if healthy {
			h.logger.Info("upstream is up", zap.String("route", h.Route), zap.String("upstream", u.Dial))
		} else {
			h.logger.Warn("upstream is down", zap.String("route", h.Route), zap.String("upstream", u.Dial), zap.Error(err))
		}
	}
	v := 0.0
	if healthy {
		v = 1
	}
	upstreamHealthy.WithLabelValues(u.Dial).Set(v)
}
