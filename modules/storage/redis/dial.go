package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// errPlaintextRefused is wrapped by the error of a dial refused because it
// would send the storage's traffic (AUTH, private keys) in clear over a
// network.
var errPlaintextRefused = errors.New("refusing plain TCP to the non-loopback address")

// redisDialer is go-redis's dial function for every connection the storage
// makes: to the configured addresses, and to whatever those announce (the
// master a Sentinel names, the nodes of a Redis Cluster). In plain TCP
// without insecure_plaintext it refuses any address that is not a
// loopback address, so Validate's check of the configured addresses is
// not the only guard.
type redisDialer struct {
	tls     *TLS
	timeout time.Duration
	guarded bool // plain TCP, loopback only
	logger  *zap.Logger
	// dialTCP connects; only called for an address the rule allows.
	dialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	logged  sync.Map // addresses whose refusal was logged already
}

func newDialer(t *TLS, timeout time.Duration, insecurePlaintext bool, logger *zap.Logger) *redisDialer {
	d := &redisDialer{tls: t, timeout: timeout, guarded: t == nil && !insecurePlaintext, logger: logger}
	nd := &net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Minute}
	if d.guarded {
		// "localhost" is allowed by name: check what it resolved to,
		// before connect(2)
		nd.Control = loopbackOnly
	}
	d.dialTCP = nd.DialContext
	return d
}

// refuse builds (and logs, once per address) the error of a refused dial.
func (d *redisDialer) refuse(addr string) error {
	if _, seen := d.logged.LoadOrStore(addr, struct{}{}); !seen && d.logger != nil {
		d.logger.Error("refusing to connect to Redis in plain TCP: the address is not a loopback address "+
			"(a Sentinel or a Redis Cluster node may have announced it); configure tls { ... } in storage redis, "+
			"or insecure_plaintext to send the stored keys in clear",
			zap.String("address", addr))
	}
	return fmt.Errorf("%w %s (a Sentinel or a Redis Cluster node may have announced it): "+
		"AUTH and the stored private keys would cross the network in clear; configure tls { ... } in storage redis, "+
		"or insecure_plaintext to allow it", errPlaintextRefused, addr)
}

// dial connects to addr: TCP, then TLS when configured.
func (d *redisDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.guarded && !isLoopback(addr) {
		return nil, d.refuse(addr)
	}
	conn, err := d.dialTCP(ctx, network, addr)
	if errors.Is(err, errPlaintextRefused) {
		return nil, d.refuse(addr)
	}
	if err != nil || d.tls == nil {
		return conn, err
	}
	// the suite's one TLS handshake (tlsclient): Redis's certificate is
	// verified against the trust pool current now (else ca_file, else the
	// system's roots) and server_name, else the host of addr; a failure is
	// counted in trustline_upstream_handshake_failures_total
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	hctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	c := d.tls.client
	tconn, err := c.Handshake(hctx, conn, c.Config(host), addr, zap.NewNop())
	if err != nil {
		return nil, fmt.Errorf("TLS handshake with Redis at %s: %w", addr, err)
	}
	return tconn, nil
}

// loopbackOnly is a net.Dialer Control function: it runs once the name is
// resolved, before connecting, and refuses an address that is not a
// loopback IP.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	if !isLoopback(address) {
		return fmt.Errorf("%w: resolved to %s", errPlaintextRefused, address)
	}
	return nil
}

// isLoopback tells whether addr (host:port or a host) is localhost or a
// loopback IP.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback()
}
