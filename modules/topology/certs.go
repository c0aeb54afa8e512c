package topology

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/material"
)

// maxFileSize bounds what the report reads of one certificate or store
// file: a config naming /dev/zero or a huge file must not hang it.
const maxFileSize = 16 << 20

// readFile reads a regular file of at most maxFileSize bytes, once per
// report.
func (a *analyzer) readFile(path string) ([]byte, error) {
	if r, ok := a.files[path]; ok {
		return r.data, r.err
	}
	data, err := readRegular(path, maxFileSize)
	a.files[path] = fileResult{data, err}
	return data, err
}

type fileResult struct {
	data []byte
	err  error
}

func readRegular(path string, limit int64) ([]byte, error) {
	if path == "" {
		return nil, errors.New("no file name")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// expandPath replaces Caddy's global placeholders ({env.X}) in a file
// name, as Caddy's loaders do.
func expandPath(p string) string {
	if !strings.Contains(p, "{") || checkFilePlaceholders(p) != nil {
		return p
	}
	return caddy.NewReplacer().ReplaceKnown(p, "")
}

// checkFilePlaceholders checks that every {file.X} placeholder of s names
// a small regular file (Caddy's replacer reads them whole).
func checkFilePlaceholders(s string) error {
	for _, m := range filePlaceholder.FindAllStringSubmatch(s, -1) {
		if _, err := readRegular(m[1], 1<<20); err != nil {
			return err
		}
	}
	return nil
}

var filePlaceholder = regexp.MustCompile(`\{file\.([^}]*)\}`)

// resolveSecret resolves a password setting ({env.X}, {file./path}) as the
// suite's modules do. The value is never put in the report.
func resolveSecret(setting, value string) (string, error) {
	if err := checkFilePlaceholders(value); err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	return material.ResolveSecret(setting, value)
}

// certKey identifies a certificate in the report: its role and either its
// fingerprint (read) or its source (not read).
type certKey struct{ role, id string }

// addCert adds (or finds) a certificate that was read, and records where
// the config uses it.
func (a *analyzer) addCert(role, source string, suite bool, c *x509.Certificate, usedBy string) *Certificate {
	sum := sha256.Sum256(c.Raw)
	fp := hex.EncodeToString(sum[:])
	return a.register(certKey{role, fp}, usedBy, func() *Certificate {
		nb, na := c.NotBefore.UTC(), c.NotAfter.UTC()
		return &Certificate{Role: role, Source: source, Suite: suite, Subject: c.Subject.String(), Issuer: c.Issuer.String(),
			Names: certNames(c), NotBefore: &nb, NotAfter: &na, SHA256: fp}
	})
}

// addCerts adds certificates that were read and returns their IDs.
func (a *analyzer) addCerts(role string, certs []*x509.Certificate, source string, suite bool, usedBy string) []string {
	var ids []string
	for _, c := range certs {
		ids = append(ids, a.addCert(role, source, suite, c, usedBy).ID)
	}
	return ids
}

// addUnread adds a certificate the report could not or would not read.
func (a *analyzer) addUnread(role, source string, suite bool, reason, usedBy string) *Certificate {
	return a.register(certKey{role, "unread " + source}, usedBy, func() *Certificate {
		return &Certificate{Role: role, Source: source, Suite: suite, NotRead: reason}
	})
}

// unreadable adds a certificate the report failed to read (the file, its
// contents, the store or its password): a certificate_not_read finding.
func (a *analyzer) unreadable(role, source string, suite bool, err error, usedBy string) *Certificate {
	cert := a.addUnread(role, source, suite, err.Error(), usedBy)
	if cert.readErr == nil {
		cert.readErr = err
	}
	return cert
}

// register returns the certificate at k, made by newCert (and numbered)
// if there is none yet, with usedBy among its uses.
func (a *analyzer) register(k certKey, usedBy string, newCert func() *Certificate) *Certificate {
	cert, ok := a.certs[k]
	if !ok {
		cert = newCert()
		a.nextID++
		cert.ID = "c" + strconv.Itoa(a.nextID)
		a.certs[k] = cert
		a.rep.Certificates = append(a.rep.Certificates, cert)
	}
	cert.use(usedBy)
	return cert
}

func (c *Certificate) use(path string) { c.UsedBy = appendNew(c.UsedBy, path) }

func certNames(c *x509.Certificate) []string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	names = append(names, c.EmailAddresses...)
	return names
}

// pemCerts reads the certificates of a PEM file (source in the report);
// when it cannot (files not read, or an error) it returns the certificate
// not read instead.
func (a *analyzer) pemCerts(role, file, source string, suite bool, usedBy string) ([]*x509.Certificate, *Certificate) {
	if a.opts.NoFiles {
		return nil, a.addUnread(role, source, suite, "files not read", usedBy)
	}
	data, err := a.readFile(file)
	var certs []*x509.Certificate
	if err == nil {
		if certs, err = material.ParsePEMCertificates(data); err != nil {
			err = fmt.Errorf("%s: %w", file, err)
		}
	}
	if err != nil {
		return nil, a.unreadable(role, source, suite, err, usedBy)
	}
	return certs, nil
}

// leafFile adds the leaf of a PEM certificate file as a server or client
// certificate; it returns it, and the parsed leaf when it was read.
func (a *analyzer) leafFile(role, file string, suite bool, usedBy string) (*Certificate, *x509.Certificate) {
	file = expandPath(file)
	source := "file " + file
	certs, unread := a.pemCerts(role, file, source, suite, usedBy)
	if unread != nil {
		return unread, nil
	}
	return a.addCert(role, source, suite, certs[0], usedBy), certs[0]
}

// anchorsFile adds every certificate of a PEM file as a trust anchor.
func (a *analyzer) anchorsFile(file, source string, suite bool, usedBy string) []string {
	certs, unread := a.pemCerts(RoleTrustAnchor, file, source, suite, usedBy)
	if unread != nil {
		return []string{unread.ID}
	}
	return a.addCerts(RoleTrustAnchor, certs, source, suite, usedBy)
}

// store reads a keystore (identity) or truststore file of the suite: PEM,
// PKCS#12 or JKS, with its password resolved from its placeholder.
type storeRef struct {
	kind, path, password, keyPassword string
	aliases                           []string
}

func (s storeRef) source() string { return s.kind + " " + s.path }

// openStore reads the trust anchors of a truststore (trust) or the leaf
// of a keystore.
func (a *analyzer) openStore(trust bool, s storeRef) ([]*x509.Certificate, error) {
	if a.opts.NoFiles {
		return nil, errors.New("files not read")
	}
	pw, err := resolveSecret("password", s.password)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPasswordNotResolved, err)
	}
	kpw, err := resolveSecret("key_password", s.keyPassword)
	if err != nil {
		return nil, fmt.Errorf("key %w: %w", errPasswordNotResolved, err)
	}
	data, err := a.readFile(expandPath(s.path))
	if err != nil {
		return nil, err
	}
	return readStore(trust, s.source(), data, material.StoreOptions{Password: pw, KeyPassword: kpw, Aliases: s.aliases})
}

// store adds the leaf of a keystore as a server or client certificate,
// or the trusted certificates of a truststore (role trust_anchor), and
// returns their IDs.
func (a *analyzer) store(role string, s storeRef, usedBy string) []string {
	certs, err := a.openStore(role == RoleTrustAnchor, s)
	if err != nil {
		return []string{a.unreadable(role, s.source(), true, err, usedBy).ID}
	}
	return a.addCerts(role, certs, s.source(), true, usedBy)
}
