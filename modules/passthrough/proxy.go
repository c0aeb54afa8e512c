package passthrough

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	peerid "github.com/trustline/trustline/modules/peer"
)

// proxyConn is one proxied connection.
type proxyConn struct {
	h          *Handler
	start      time.Time
	client     net.Addr
	serverName string
	alpn       []string
	down, up   net.Conn
	identity   *peerid.Identity // verified client, when TLS was terminated at layer 4
	forced     atomic.Pointer[string]
}

// forceClose ends the connection for reason (grace_period, max_lifetime,
// idle_timeout); the first reason given wins.
func (pc *proxyConn) forceClose(reason string) {
	if !pc.forced.CompareAndSwap(nil, &reason) {
		return
	}
	forcedCloses.WithLabelValues(pc.h.Route, reason).Inc()
	_ = pc.down.Close()
	_ = pc.up.Close()
}

var errIdle = errors.New("idle timeout")

// testHookProxy, when a test sets it, sees the two connections the copy
// loop joins.
var testHookProxy func(down, up net.Conn)

// run writes the first flight (PROXY header and replayed bytes) and then
// copies both ways until both directions ended. It returns the bytes
// moved each way (the replayed bytes count as the client's), why the
// connection ended, and the error that ended it, if any.
func (pc *proxyConn) run(header, replay []byte, idle time.Duration) (toUp, toDown int64, reason string, err error) {
	defer pc.down.Close()
	defer pc.up.Close()
	if len(header)+len(replay) > 0 {
		bufs := net.Buffers{header, replay}
		n, werr := bufs.WriteTo(pc.up)
		toUp = max(0, n-int64(len(header)))
		if werr != nil {
			return toUp, 0, "upstream_error", werr
		}
	}

	if testHookProxy != nil {
		testHookProxy(pc.down, pc.up)
	}
	splice := useSplice(pc.h.Copy, idle, pc.down, pc.up)
	if ce := pc.h.logger.Check(zapcore.DebugLevel, "joining connections"); ce != nil {
		_, downTCP := pc.down.(*net.TCPConn)
		_, upTCP := pc.up.(*net.TCPConn)
		ce.Write(zap.String("client_conn", fmt.Sprintf("%T", pc.down)), zap.String("upstream_conn", fmt.Sprintf("%T", pc.up)),
			zap.Bool("splice", splice && downTCP && upTCP))
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var first atomic.Value // the side that ended first: "client" or "upstream"
	var upN int64
	var upErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		upN, upErr = pc.copy(pc.up, pc.down, idle, splice, &last)
		first.CompareAndSwap(nil, "client")
		pc.endDirection(pc.up, upErr)
	})
	toDown, downErr := pc.copy(pc.down, pc.up, idle, splice, &last)
	first.CompareAndSwap(nil, "upstream")
	pc.endDirection(pc.down, downErr)
	wg.Wait()
	toUp += upN

	if f := pc.forced.Load(); f != nil {
		return toUp, toDown, *f, nil
	}
	side, err := "client", upErr
	if first.Load() != "client" {
		side, err = "upstream", downErr
	}
	if err != nil {
		return toUp, toDown, side + "_error", err
	}
	return toUp, toDown, side + "_closed", nil
}

// endDirection ends one direction: after a clean end of stream the
// other side gets a FIN and the opposite direction carries on; after an
// error both connections are closed, so the other copy stops too.
func (pc *proxyConn) endDirection(dst net.Conn, err error) {
	if err != nil {
		if errors.Is(err, errIdle) {
			pc.forceClose("idle_timeout")
		}
		_ = pc.down.Close()
		_ = pc.up.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = dst.Close()
}

// useSplice tells whether the copy is left to io.Copy (splice(2) for two
// *net.TCPConn) rather than a pooled buffer. "auto" splices only when
// neither peer is on this host: on loopback Go's splice moves up to 1 MiB
// per system call for no less CPU than two copies, and the proxy waits
// in long system calls (docs/benchmarks.md, "W1 and the copy"); across a
// network card it saves a fifth to a third of the copy's system time.
// An idle timeout needs read deadlines between reads: always buffered.
func useSplice(mode string, idle time.Duration, down, up net.Conn) bool {
	switch {
	case idle > 0 || mode == "buffered":
		return false
	case mode == "splice":
		return true
	}
	return !onThisHost(down.RemoteAddr()) && !onThisHost(up.RemoteAddr())
}

// onThisHost tells whether a peer is on this machine: a loopback address
// (IPv4-mapped ones included) or a Unix socket.
func onThisHost(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// copy moves bytes from src to dst: with splice a plain io.Copy,
// otherwise through a pooled 32 KiB buffer (as caddy-l4's proxy, HAProxy
// and nginx do), with read deadlines when an idle timeout is set.
func (pc *proxyConn) copy(dst, src net.Conn, idle time.Duration, splice bool, last *atomic.Int64) (int64, error) {
	if splice {
		return io.Copy(dst, src)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	if idle <= 0 {
		// the wrappers hide ReadFrom and WriteTo, which would splice
		return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
	}
	var total int64
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				if errors.Is(werr, os.ErrDeadlineExceeded) {
					return total, errIdle
				}
				return total, werr
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// idle this way; the other direction may still be busy
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
				return total, errIdle
			}
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// logDone writes the connection's one log line.
func (pc *proxyConn) logDone(u *Upstream, toUp, toDown int64, reason string, err error) {
	h := pc.h
	level := zapcore.InfoLevel
	if reason == "dial_failed" || reason == "proxy_protocol_error" || reason == "config_error" {
		level = zapcore.WarnLevel
	}
	ce := h.logger.Check(level, "passthrough connection")
	if ce == nil {
		return
	}
	upstream := ""
	if u != nil {
		upstream = u.Dial
	}
	fields := []zap.Field{
		zap.String("client_addr", pc.client.String()),
		zap.String("server_name", pc.serverName),
		zap.Strings("alpn", pc.alpn),
		zap.String("route", h.Route),
		zap.String("upstream", upstream),
		zap.Int64("bytes_from_client", toUp),
		zap.Int64("bytes_to_client", toDown),
		zap.Duration("duration", time.Since(pc.start)),
		zap.String("close_reason", reason),
	}
	if pc.identity != nil {
		fields = append(fields, zap.String("client_identity", clientName(pc.identity)))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	ce.Write(fields...)
}
