package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
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
// master a Sentinel names, the nodes of a Redis Cluster). Without TLS and
// without insecure_plaintext, it refuses any address that is not a
// loopback address before connecting, so checking the configured
// addresses in Validate is not the only guard.
type redisDialer struct {
	tls               *TLS
	timeout           time.Duration
	insecurePlaintext bool
	logger            *zap.Logger
	// dialTCP connects (net.Dialer's DialContext); only called for an
	// address the rule allows.
	dialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	logged  sync.Map // addresses whose refusal was logged already
}

func newDialer(t *TLS, timeout time.Duration, insecurePlaintext bool, logger *zap.Logger) *redisDialer {
	nd := &net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Minute}
	if t == nil && !insecurePlaintext {
		// "localhost" is allowed by name: check what it resolved to,
		// before connect(2)
		nd.Control = loopbackOnly
	}
	return &redisDialer{tls: t, timeout: timeout, insecurePlaintext: insecurePlaintext, logger: logger, dialTCP: nd.DialContext}
}

// plaintextGuarded reports whether dials go out in plain TCP and must
// stay on loopback.
func (d *redisDialer) plaintextGuarded() bool { return d.tls == nil && !d.insecurePlaintext }

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
	if d.plaintextGuarded() && !isLoopback(addr) {
		return nil, d.refuse(addr)
	}
	conn, err := d.dialTCP(ctx, network, addr)
	if err != nil {
		if errors.Is(err, errPlaintextRefused) {
			return nil, d.refuse(addr)
		}
		return nil, err
	}
	if d.tls == nil {
		return conn, nil
	}
	// the suite's one TLS handshake (tlsclient): Redis's certificate is
	// verified against the trust pool current now (else ca_file, else the
	// system's roots) and server_name, else the host of addr (an IP address
	// must be an IP SAN); a failure is counted in
	// trustline_upstream_handshake_failures_total and reported in our error
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

// loopbackOnly is a net.Dialer Control function: it runs after the name
// is resolved and before the connection is attempted, and refuses an
// address that is not a loopback IP.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: resolved to %s", errPlaintextRefused, address)
	}
	return nil
}
