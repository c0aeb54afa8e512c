package material

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
)

// ParseCRLs parses the contents of a CRL file: PEM ("X509 CRL" blocks,
// several allowed, read whole by DecodePEM) or one DER CRL.
func ParseCRLs(data []byte) ([]*x509.RevocationList, error) {
	var ders [][]byte
	if bytes.Contains(data, pemBegin) {
		blocks, err := DecodePEM(data)
		if err != nil {
			return nil, err
		}
		for _, block := range blocks {
			if block.Type != "X509 CRL" {
				return nil, fmt.Errorf("unexpected PEM block %q (want X509 CRL)", block.Type)
			}
			ders = append(ders, block.Bytes)
		}
	} else if len(data) > 0 {
		ders = [][]byte{data}
	}
	if len(ders) == 0 {
		return nil, errors.New("no CRL found")
	}
	out := make([]*x509.RevocationList, 0, len(ders))
	for i, der := range ders {
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("CRL #%d: %w", i+1, err)
		}
		out = append(out, l)
	}
	return out, nil
}
