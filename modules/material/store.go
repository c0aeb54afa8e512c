package material

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/pavlo-v-chernykh/keystore-go/v4"
	"software.sslmate.com/src/go-pkcs12"
)

// Format is the encoding of a store file, detected from its content.
type Format string

// The store formats the reader knows.
const (
	FormatPEM    Format = "pem"
	FormatPKCS12 Format = "pkcs12"
	FormatJKS    Format = "jks"
)

// ErrWrongPassword is returned (wrapped) when a keystore's integrity check
// or decryption fails because of the password.
var ErrWrongPassword = errors.New("wrong password or corrupt store (integrity check failed)")

// StoreOptions say how to open a store.
type StoreOptions struct {
	// Password of the store (PKCS#12, JKS). Never logged.
	Password string
	// KeyPassword of a JKS private-key entry; the store password if empty.
	KeyPassword string
	// Aliases restricts a JKS store to these entries (all when empty).
	Aliases []string
}

// DetectFormat tells the format from the content, not the file name:
// JKS by its magic number, PEM by its armour, PKCS#12 by a DER SEQUENCE.
func DetectFormat(data []byte) (Format, error) {
	switch {
	case len(data) >= 4 && bytes.Equal(data[:4], []byte{0xFE, 0xED, 0xFE, 0xED}):
		return FormatJKS, nil
	case len(data) >= 4 && bytes.Equal(data[:4], []byte{0xCE, 0xCE, 0xCE, 0xCE}):
		return "", errors.New("JCEKS stores are not supported: convert with `keytool -importkeystore -deststoretype pkcs12`")
	case bytes.Contains(data, []byte("-----BEGIN ")):
		return FormatPEM, nil
	case len(data) > 0 && data[0] == 0x30:
		return FormatPKCS12, nil
	case len(bytes.TrimSpace(data)) == 0:
		return "", errors.New("file is empty")
	default:
		return "", errors.New("unrecognised format: not PEM, PKCS#12 or JKS")
	}
}

// ReadTrustAnchors reads the trusted certificates of a truststore: the
// CERTIFICATE blocks of a PEM file, or the trusted-certificate entries of a
// PKCS#12 or JKS store. A store with none is an error.
func ReadTrustAnchors(data []byte, opts StoreOptions) ([]*x509.Certificate, error) {
	format, err := DetectFormat(data)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	switch format {
	case FormatPEM:
		if len(opts.Aliases) > 0 {
			return nil, errors.New("aliases apply to JKS stores only")
		}
		certs, err = ParsePEMCertificates(data)
	case FormatPKCS12:
		certs, err = readPKCS12Trust(data, opts)
	case FormatJKS:
		certs, err = readJKSTrust(data, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", format, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no trusted certificates in the store", format)
	}
	return certs, nil
}

func readPKCS12Trust(data []byte, opts StoreOptions) ([]*x509.Certificate, error) {
	if len(opts.Aliases) > 0 {
		return nil, errors.New("aliases apply to JKS stores only (go-pkcs12 does not expose PKCS#12 friendly names)")
	}
	if err := checkPKCS12Iterations(data); err != nil {
		return nil, err
	}
	certs, err := pkcs12.DecodeTrustStore(data, opts.Password)
	if err == nil {
		return certs, nil
	}
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, ErrWrongPassword
	}
	err = pkcs12Error{err}
	// a keystore offered as a truststore, told by reading it as one: only
	// on the errors a keystore gives, so a broken store is not derived twice
	msg := err.Error()
	if strings.Contains(msg, "authenticated safe") || strings.Contains(msg, "only certificate bags") || strings.Contains(msg, "not marked as trusted") {
		if _, _, _, kerr := pkcs12.DecodeChain(data, opts.Password); kerr == nil {
			return nil, errors.New("the store holds a private key, not trusted-certificate entries: use it as a keystore, or export its CA with `keytool -exportcert`")
		}
	}
	if strings.Contains(msg, "not marked as trusted") {
		return nil, fmt.Errorf("%w (make it with `keytool -importcert -storetype pkcs12`, or `openssl pkcs12 -export -nokeys -jdktrust anyExtendedKeyUsage`)", err)
	}
	return nil, err
}

// pkcs12Error is an error of go-pkcs12 without its "pkcs12: " prefix.
type pkcs12Error struct{ err error }

func (e pkcs12Error) Error() string { return strings.TrimPrefix(e.err.Error(), "pkcs12: ") }
func (e pkcs12Error) Unwrap() error { return e.err }

// StoreFileError is err of reading a store's file without the path that
// the caller's own error names ("open: no such file or directory"); other
// errors are returned as they are.
func StoreFileError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

func loadJKS(data []byte, password string) (keystore.KeyStore, error) {
	if password == "" {
		return keystore.KeyStore{}, errors.New("a JKS store needs its password to check its integrity")
	}
	if err := checkJKSShape(data); err != nil {
		return keystore.KeyStore{}, err
	}
	ks := keystore.New(keystore.WithMinPasswordLen(0))
	if err := ks.Load(bytes.NewReader(data), []byte(password)); err != nil {
		if strings.Contains(err.Error(), "digest") {
			return ks, ErrWrongPassword
		}
		return ks, err
	}
	return ks, nil
}

func readJKSTrust(data []byte, opts StoreOptions) ([]*x509.Certificate, error) {
	ks, err := loadJKS(data, opts.Password)
	if err != nil {
		return nil, err
	}
	aliases, err := selectAliases(ks.Aliases(), opts.Aliases)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	keys := 0
	for _, alias := range aliases {
		if ks.IsPrivateKeyEntry(alias) {
			keys++
			continue
		}
		entry, err := ks.GetTrustedCertificateEntry(alias)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", alias, err)
		}
		cert, err := x509.ParseCertificate(entry.Certificate.Content)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", alias, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 && keys > 0 {
		return nil, fmt.Errorf("the store holds only private-key entries (%d), no trusted certificates: use it as a keystore", keys)
	}
	return certs, nil
}

func selectAliases(have, want []string) ([]string, error) {
	if len(want) == 0 {
		return have, nil
	}
	out := make([]string, len(want))
	for i, w := range want {
		if out[i] = strings.ToLower(w); !slices.Contains(have, out[i]) {
			return nil, fmt.Errorf("alias %q not in the store (it has: %s)", w, strings.Join(have, ", "))
		}
	}
	return out, nil
}

// ReadKeyStore reads an identity (a private key and its certificate chain)
// from a PKCS#12 or JKS keystore. For JKS, opts.Aliases may name the entry;
// without it the store must hold exactly one private-key entry.
func ReadKeyStore(data []byte, opts StoreOptions) (*tls.Certificate, error) {
	format, err := DetectFormat(data)
	if err != nil {
		return nil, err
	}
	var cert *tls.Certificate
	switch format {
	case FormatPEM:
		err = errors.New("a PEM keystore needs separate certificate and key files")
	case FormatPKCS12:
		cert, err = readPKCS12Key(data, opts.Password)
	case FormatJKS:
		cert, err = readJKSKey(data, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", format, err)
	}
	return cert, nil
}

func readPKCS12Key(data []byte, password string) (*tls.Certificate, error) {
	if err := checkPKCS12Iterations(data); err != nil {
		return nil, err
	}
	key, leaf, chain, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		switch msg := err.Error(); {
		case errors.Is(err, pkcs12.ErrIncorrectPassword):
			return nil, ErrWrongPassword
		case strings.Contains(msg, "private key missing"):
			return nil, errors.New("no private key in the store (a truststore?)")
		case strings.Contains(msg, "expected exactly one key bag"):
			return nil, errors.New("several private keys in the store: a keystore identity is one key and its chain")
		}
		return nil, pkcs12Error{err}
	}
	return NewKeyPair(key, append([]*x509.Certificate{leaf}, chain...))
}

func readJKSKey(data []byte, opts StoreOptions) (*tls.Certificate, error) {
	ks, err := loadJKS(data, opts.Password)
	if err != nil {
		return nil, err
	}
	keyAliases := slices.DeleteFunc(ks.Aliases(), func(a string) bool { return !ks.IsPrivateKeyEntry(a) })
	var alias string
	switch {
	case len(opts.Aliases) > 1:
		return nil, errors.New("a keystore identity takes one alias")
	case len(opts.Aliases) == 1:
		alias = strings.ToLower(opts.Aliases[0])
		if !slices.Contains(keyAliases, alias) {
			return nil, fmt.Errorf("no private-key entry %q (private-key entries: %s)", opts.Aliases[0], strings.Join(keyAliases, ", "))
		}
	case len(keyAliases) == 1:
		alias = keyAliases[0]
	case len(keyAliases) == 0:
		return nil, errors.New("no private-key entry in the store (a truststore?)")
	default:
		return nil, fmt.Errorf("several private-key entries (%s): choose one with alias", strings.Join(keyAliases, ", "))
	}
	entry, err := ks.GetPrivateKeyEntry(alias, []byte(cmp.Or(opts.KeyPassword, opts.Password)))
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w (is the key password right?)", alias, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(entry.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("entry %q: private key: %w", alias, err)
	}
	chain := make([]*x509.Certificate, len(entry.CertificateChain))
	for i, c := range entry.CertificateChain {
		if chain[i], err = x509.ParseCertificate(c.Content); err != nil {
			return nil, fmt.Errorf("entry %q: certificate %d: %w", alias, i, err)
		}
	}
	return NewKeyPair(key, chain)
}

// ReadPEMKeyPair reads a key pair from PEM certificate (leaf first, then
// its chain) and key data, each read whole by DecodePEM; errors say which
// of the two files and the line (callers add the paths).
func ReadPEMKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	chain, err := ParsePEMCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate file: %w", err)
	}
	key, err := ParsePEMPrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return NewKeyPair(key, chain)
}

// NewKeyPair builds a tls.Certificate from a key and its chain (leaf
// first), checking that the key matches the leaf.
func NewKeyPair(key any, chain []*x509.Certificate) (*tls.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate for the private key")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return nil, errors.New("the private key does not match the certificate")
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}
