package spiffeworkload

import (
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/trustline/trustline/modules/keystore"

	"github.com/trustline/trustline/modules/material"
)

// parseUsage reads the usage a consumer asks for (keystore.Load sets it).
func parseUsage(s string) (keystore.Usage, error) {
	switch u := keystore.Usage(s); u {
	case "", keystore.UsageAny:
		return keystore.UsageAny, nil
	case keystore.UsageClientAuth, keystore.UsageServerAuth:
		return u, nil
	}
	return "", fmt.Errorf("usage %q: expected client_auth, server_auth or any", s)
}

// checkUsage checks that leaf may be used for u, as the keystore package's
// file sources do: no extended key usage at all, anyExtendedKeyUsage, or
// the one asked for. SPIRE's X509-SVIDs carry both serverAuth and
// clientAuth.
func checkUsage(leaf *x509.Certificate, u keystore.Usage) error {
	var want x509.ExtKeyUsage
	switch u {
	case keystore.UsageClientAuth:
		want = x509.ExtKeyUsageClientAuth
	case keystore.UsageServerAuth:
		want = x509.ExtKeyUsageServerAuth
	default:
		return nil
	}
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return nil
	}
	var have []string
	for _, e := range leaf.ExtKeyUsage {
		if e == want || e == x509.ExtKeyUsageAny {
			return nil
		}
		have = append(have, fmt.Sprintf("eku(%d)", e))
	}
	for _, oid := range leaf.UnknownExtKeyUsage {
		have = append(have, oid.String())
	}
	return fmt.Errorf("certificate (serial %s) lacks the %s extended key usage (it has: %s)",
		material.SerialString(leaf), u, strings.Join(have, ", "))
}
