package material

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// DecodePEM returns the PEM blocks of data, refusing data that is not
// whole (README.md, "PEM files are read whole"): the suite's one PEM
// reader. pem.Decode skips a block it cannot decode and ignores what
// follows the last block, so a file cut short would read as a good,
// shorter version. Data with no PEM block gives no blocks and no error.
func DecodePEM(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	rest := data
	for {
		at := len(data) - len(rest)
		block, after := pem.Decode(rest)
		if block == nil {
			break
		}
		end := len(data) - len(after)
		// pem.Decode takes the last BEGIN line before the first END line
		// it can complete: what comes before it was skipped
		begin := at + bytes.LastIndex(data[at:end], pemBegin)
		if err := checkSkipped(data, at, begin); err != nil {
			return nil, err
		}
		blocks = append(blocks, block)
		rest = after
	}
	at := len(data) - len(rest)
	if err := checkSkipped(data, at, len(data)); err != nil {
		return nil, err
	}
	if trimmed := bytes.TrimLeft(rest, " \t\r\n"); len(blocks) > 0 && len(trimmed) > 0 {
		return nil, pemErrorf(data, len(data)-len(trimmed), "unexpected data after the last PEM block (a file cut short, or written in two goes?)")
	}
	return blocks, nil
}

var (
	pemBegin = []byte("-----BEGIN")
	pemEnd   = []byte("-----END")
)

// checkSkipped refuses a BEGIN or END line in data[from:to], bytes that
// pem.Decode skipped.
func checkSkipped(data []byte, from, to int) error {
	skipped := data[from:to]
	b, e := bytes.Index(skipped, pemBegin), bytes.Index(skipped, pemEnd)
	switch {
	case b >= 0 && (e < 0 || b < e):
		return pemErrorf(data, from+b, "PEM block %q does not decode (cut short, or a broken base64 or END line)", lineAt(skipped, b))
	case e >= 0:
		return pemErrorf(data, from+e, "END line %q without a block that decodes", lineAt(skipped, e))
	}
	return nil
}

// lineAt is the line of data that starts at i, cut to a readable length.
func lineAt(data []byte, i int) string {
	line := data[i:]
	if j := bytes.IndexAny(line, "\r\n"); j >= 0 {
		line = line[:j]
	}
	if len(line) > 64 {
		line = line[:64]
	}
	return string(line)
}

// pemErrorf is an error at byte offset i of data, naming its line.
func pemErrorf(data []byte, i int, format string, args ...any) error {
	return fmt.Errorf("line %d: %s", 1+bytes.Count(data[:i], []byte("\n")), fmt.Sprintf(format, args...))
}

// ParsePEMCertificates parses every CERTIFICATE block of data, read by
// DecodePEM; other blocks are skipped, and no certificate is an error.
// Errors name the line; callers add the file.
func ParsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	blocks, err := DecodePEM(data)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for n, block := range blocks {
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE block found")
	}
	return certs, nil
}

// ParsePEMPrivateKey reads the one private key of PEM data (PKCS#8,
// PKCS#1 or SEC 1), read by DecodePEM; other blocks (EC parameters) are
// skipped. Errors never hold key material.
func ParsePEMPrivateKey(data []byte) (crypto.Signer, error) {
	blocks, err := DecodePEM(data)
	if err != nil {
		return nil, err
	}
	var keyBlock *pem.Block
	certs := 0
	for _, b := range blocks {
		switch {
		case b.Type == "CERTIFICATE":
			certs++
		case b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "":
			return nil, errors.New("the private key is encrypted: store it decrypted (`openssl pkey -in <file> -out <file>`) with tight file permissions, or use a PKCS#12 or JKS keystore with a password")
		case b.Type == "PRIVATE KEY" || strings.HasSuffix(b.Type, " PRIVATE KEY"):
			if keyBlock != nil {
				return nil, errors.New("several private keys: a key file holds one")
			}
			keyBlock = b
		}
	}
	if keyBlock == nil {
		if certs > 0 {
			return nil, errors.New("no private-key PEM block, but a certificate (certificate and key files swapped?)")
		}
		return nil, errors.New("no private-key PEM block found")
	}
	// whatever the block's type says, as crypto/tls does
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		if k, err1 := x509.ParsePKCS1PrivateKey(keyBlock.Bytes); err1 == nil {
			key, err = k, nil
		} else if k, err2 := x509.ParseECPrivateKey(keyBlock.Bytes); err2 == nil {
			key, err = k, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s block: not a PKCS#8, PKCS#1 or SEC 1 private key", keyBlock.Type)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	return signer, nil
}
