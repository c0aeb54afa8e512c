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
	upstream   *Upstream
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
	if ce := pc.h.logger.Check(zapcore.DebugLevel, "joining connections"); ce != nil {
		_, downTCP := pc.down.(*net.TCPConn)
		_, upTCP := pc.up.(*net.TCPConn)
		ce.Write(zap.String("client_conn", fmt.Sprintf("%T", pc.down)), zap.String("upstream_conn", fmt.Sprintf("%T", pc.up)),
			zap.Bool("splice", downTCP && upTCP && idle <= 0))
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var first atomic.Pointer[string]
	var (
		wg        sync.WaitGroup
		upN       int64
		upErr     error
		clientEnd = "client"
		upEnd     = "upstream"
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		upN, upErr = pc.copy(pc.up, pc.down, idle, &last)
		first.CompareAndSwap(nil, &clientEnd)
		pc.endDirection(pc.up, upErr)
	}()
	downN, downErr := pc.copy(pc.down, pc.up, idle, &last)
	first.CompareAndSwap(nil, &upEnd)
	pc.endDirection(pc.down, downErr)
	wg.Wait()
	toUp += upN
	toDown = downN

	if f := pc.forced.Load(); f != nil {
		return toUp, toDown, *f, nil
	}
	if *first.Load() == clientEnd {
		if upErr != nil {
			return toUp, toDown, "client_error", upErr
		}
		return toUp, toDown, "client_closed", nil
	}
	if downErr != nil {
		return toUp, toDown, "upstream_error", downErr
	}
	return toUp, toDown, "upstream_closed", nil
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

// copy moves bytes from src to dst. Without an idle timeout it is a plain
// io.Copy, which for two *net.TCPConn is a splice in the kernel.
func (pc *proxyConn) copy(dst, src net.Conn, idle time.Duration, last *atomic.Int64) (int64, error) {
	if idle <= 0 {
		return io.Copy(dst, src)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
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
