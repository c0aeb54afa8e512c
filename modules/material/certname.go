package material

import (
	"crypto/x509"
	"math/big"
	"time"

	"go.uber.org/zap"
)

// SerialString is the one way the suite prints a certificate's serial
// number, in errors, logs, placeholders ({peer.serial}) and the admin
// API: lowercase hex without colons or leading zeros, as Caddy's
// {http.request.tls.client.serial}. (`openssl x509 -serial` prints the
// same digits in upper case, padded to whole bytes.) Empty for a
// certificate without one.
func SerialString(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return FormatSerial(c.SerialNumber)
}

// FormatSerial is SerialString for a serial number on its own (an OCSP
// answer's).
func FormatSerial(n *big.Int) string {
	if n == nil {
		return ""
	}
	return n.Text(16)
}

// TimeString is the one way the suite writes a time in an error or a
// log: RFC 3339, in UTC.
func TimeString(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// TimeField is a log field holding a time as TimeString, so that it reads
// the same under every log encoder (zap.Time follows the encoder: epoch
// seconds under Caddy's JSON default).
func TimeField(key string, t time.Time) zap.Field {
	return zap.String(key, TimeString(t))
}
