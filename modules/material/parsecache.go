package material

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
)

// parseCache keeps parsed certificates by the SHA-256 of their DER, so a
// verifier that receives raw certificates does not parse the same client
// leaf or intermediate again on every handshake. It is bounded: when full
// it starts over.
var parseCache = struct {
	sync.RWMutex
	m map[[32]byte]*x509.Certificate
}{m: make(map[[32]byte]*x509.Certificate)}

const maxParsed = 1 << 14

// ParseCertificate is x509.ParseCertificate with a cache. The returned
// certificate is shared: callers must not modify it.
func ParseCertificate(der []byte) (*x509.Certificate, error) {
	sum := sha256.Sum256(der)
	parseCache.RLock()
	c, ok := parseCache.m[sum]
	parseCache.RUnlock()
	if ok {
		return c, nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	parseCache.Lock()
	if len(parseCache.m) >= maxParsed {
		clear(parseCache.m)
	}
	parseCache.m[sum] = c
	parseCache.Unlock()
	return c, nil
}
