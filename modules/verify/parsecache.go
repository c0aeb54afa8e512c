package verify

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
)

// parseCache keeps parsed certificates by the SHA-256 of their DER, so a
// verifier does not parse the same leaf or intermediate on every
// handshake. Only accepted certificates enter it (Remember), so refused
// handshakes cannot fill it; each holds its own copy of the DER (a slice
// of a handshake message would keep the message alive). When a bound
// (entries, bytes) is reached it starts over.
var parseCache = struct {
	sync.RWMutex
	m     map[[32]byte]*x509.Certificate
	bytes int
}{m: make(map[[32]byte]*x509.Certificate)}

const (
	maxParsed      = 1 << 14
	maxParsedBytes = 16 << 20
)

// ParseCertificate returns the certificate der encodes: the cached one
// when a verification accepted the same bytes, else a parse of a private
// copy (not cached). It may be shared: callers must not modify it.
func ParseCertificate(der []byte) (*x509.Certificate, error) {
	sum := sha256.Sum256(der)
	parseCache.RLock()
	c, ok := parseCache.m[sum]
	parseCache.RUnlock()
	if ok {
		return c, nil
	}
	return x509.ParseCertificate(append([]byte(nil), der...))
}

// Remember caches certificates that a verification accepted; they must
// come from ParseCertificate (so that their DER is a private copy) or from
// a trust pool.
func Remember(certs []*x509.Certificate) {
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		parseCache.RLock()
		cached := parseCache.m[sum] == c
		parseCache.RUnlock()
		if cached {
			continue
		}
		parseCache.Lock()
		if len(parseCache.m) >= maxParsed || parseCache.bytes+len(c.Raw) > maxParsedBytes {
			clear(parseCache.m)
			parseCache.bytes = 0
		}
		if _, ok := parseCache.m[sum]; !ok {
			parseCache.m[sum] = c
			parseCache.bytes += len(c.Raw)
		}
		parseCache.Unlock()
	}
}
