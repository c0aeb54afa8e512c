package tlsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

// The reasons an upstream TLS handshake fails, as logged (field `reason`)
// and counted (label `reason` of trustline_upstream_handshake_failures_total).
const (
	// Our verification of the backend's certificate:
	ReasonUnknownAuthority = verify.ReasonUnknownAuthority // not issued by the trust pool
	ReasonNameMismatch     = verify.ReasonNameMismatch     // not valid for the server name
	ReasonExpired          = verify.ReasonExpired          // backend certificate expired
	ReasonNotYetValid      = verify.ReasonNotYetValid      // backend certificate not valid yet
	ReasonBadUsage         = verify.ReasonBadUsage         // no serverAuth extended key usage
	ReasonTrustDomain      = verify.ReasonTrustDomain      // a SPIFFE authority vouching outside its trust domain
	ReasonIdentityMismatch = "identity_mismatch"           // not one of upstream_identity
	ReasonNoCertificate    = verify.ReasonNoCertificate    // the backend sent none
	ReasonNoServerName     = "no_server_name"              // nothing to verify the name against
	// The backend's verdict on ours, from the TLS alert it sent:
	ReasonCertificateRequired = "certificate_required" // it wanted one, we had none
	ReasonBadCertificate      = "bad_certificate"      // it refused ours (bad certificate, unknown CA, expired, ...)
	ReasonAlert               = "alert"                // another alert (handshake failure, protocol version, ...)
	// Neither:
	ReasonTimeout = "timeout"
	ReasonOther   = verify.ReasonOther
	// Not a failure: the dial was called off (net/http cancels the dials
	// it no longer needs); never counted, logged at debug level only.
	ReasonCanceled = "canceled"
)

// verifyError is a failed verification of the backend's certificate.
type verifyError struct {
	reason string
	err    error
}

func (e *verifyError) Error() string { return e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// HandshakeError is returned (wrapped by net/http) when the TLS handshake
// with an upstream fails.
type HandshakeError struct {
	// Upstream is the address dialed.
	Upstream string
	// Reason is one of the Reason constants.
	Reason string
	// Alert is the TLS alert the backend sent, if any.
	Alert string
	// Presented is the client identity presented (see Handshake).
	Presented string
	Err       error
}

func (e *HandshakeError) Error() string {
	return "upstream " + e.Upstream + ": TLS handshake failed (" + e.Reason + "): " + e.Err.Error()
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// Classify tells why a TLS handshake with a backend (or the first read
// after it, where TLS 1.3 servers report a refused client certificate)
// failed: a Reason constant ("" for an error that is no TLS failure), and
// the alert the backend sent, if any.
func Classify(err error) (reason, alert string) {
	if err == nil {
		return "", ""
	}
	if errors.Is(err, context.Canceled) {
		return ReasonCanceled, ""
	}
	var ve *verifyError
	if errors.As(err, &ve) {
		return ve.reason, ""
	}
	var he *HandshakeError
	if errors.As(err, &he) {
		return he.Reason, he.Alert
	}
	if r := verify.ReasonOf(err); r != "" {
		return r, ""
	}
	if alert = remoteAlert(err); alert != "" {
		switch alert {
		case "certificate required":
			return ReasonCertificateRequired, alert
		// crypto/tls's names of the alerts a server sends about a client
		// certificate (RFC 8446 section 6.2)
		case "bad certificate", "unsupported certificate", "revoked certificate", "expired certificate",
			"unknown certificate", "unknown certificate authority", "access denied", "error decrypting message":
			return ReasonBadCertificate, alert
		}
		return ReasonAlert, alert
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return ReasonTimeout, ""
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout, ""
	}
	return "", ""
}

// remoteAlert finds, anywhere in err's tree, the alert a TLS peer sent
// (crypto/tls reports it as a net.OpError with Op "remote error"), and
// returns its text ("bad certificate"); "" when there is none.
func remoteAlert(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil {
		return strings.TrimPrefix(oe.Err.Error(), "tls: ")
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if next := u.Unwrap(); next != nil {
			return remoteAlert(next)
		}
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if a := remoteAlert(e); a != "" {
				return a
			}
		}
	}
	return ""
}

var handshakeFailures = material.NewCounterVec("trustline_upstream_handshake_failures_total",
	"Failed TLS handshakes with upstreams (mtls transport, layer-4 passthrough handler), by upstream and reason.",
	"upstream", "reason")

// registerMetrics adds the counters to ctx's metrics registry (one per
// config load; the counts live for the process).
func registerMetrics(ctx caddy.Context) {
	material.RegisterCollectors(ctx, "upstream handshake", handshakeFailures)
}

// fail counts a failed handshake (a canceled one is no failure) and logs
// it, lead first (the passthrough handler's route and client address).
func (c *Client) fail(logger *zap.Logger, he *HandshakeError, serverName string, lead []zap.Field) {
	level, msg := zapcore.ErrorLevel, "upstream TLS handshake failed"
	if he.Reason == ReasonCanceled {
		level, msg = zapcore.DebugLevel, "upstream TLS handshake canceled"
	} else {
		handshakeFailures.WithLabelValues(he.Upstream, he.Reason).Inc()
	}
	ce := logger.Check(level, msg)
	if ce == nil {
		return
	}
	fields := append(lead,
		zap.String("upstream", he.Upstream),
		zap.String("reason", he.Reason),
		zap.String("client_identity", he.Presented))
	if serverName != "" {
		fields = append(fields, zap.String("server_name", serverName))
	}
	if he.Alert != "" {
		fields = append(fields, zap.String("alert", he.Alert))
	}
	if c.Keystore != nil {
		fields = append(fields, zap.String("client_identity_source", c.Keystore.Name()))
	}
	ce.Write(append(fields, zap.Error(he.Err))...)
}

// Refusal returns err, the error that ended a connection to upstream (nil:
// a clean end), with the backend's refusal of our client certificate when
// there was one: TLS 1.3 servers send it after the handshake as their
// first record, which the user of conn (nil: not known) may not have
// read. A refusal is counted and logged like a failed handshake.
func (c *Client) Refusal(upstream string, conn *Conn, err error, logger *zap.Logger, lead ...zap.Field) error {
	he := &HandshakeError{Upstream: upstream, Presented: "unknown", Err: err}
	he.Reason, he.Alert = Classify(err)
	if conn != nil {
		he.Presented = conn.Presented
		if he.Alert == "" && time.Since(conn.made) < 5*time.Second {
			// the user may report a failure a moment before it closes the
			// connection (net/http does; on a busy machine it can take a
			// few hundred milliseconds); one still open after a second is
			// in use, not the one that failed
			for wait := 0; wait < 200 && !conn.raw.closed.Load(); wait++ {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if he.Alert == "" && conn.raw.closed.Load() {
			_, rerr := conn.Read(make([]byte, 1))
			if he.Reason, he.Alert = Classify(rerr); he.Alert != "" {
				if err == nil {
					he.Err = rerr
				} else {
					he.Err = fmt.Errorf("%w (the backend's alert on the connection: %w)", err, rerr)
				}
			}
		}
	}
	if he.Alert == "" {
		return err
	}
	c.fail(logger, he, "", lead)
	return he.Err
}
