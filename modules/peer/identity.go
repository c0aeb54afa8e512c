package peer

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

// Identity is what a verified peer certificate says about its holder. It is
// built from the leaf of a verified chain only (verifiedChains[0][0]), never
// from what a peer merely presented, and it is immutable once built.
//
// It holds no reference to its *x509.Certificate, so that the cache below
// can drop it when the connection's certificate is garbage collected.
type Identity struct {
	// SPIFFEID is the peer's SPIFFE ID ("spiffe://td/path"), set only when
	// the leaf is a valid X509-SVID for client authentication: exactly one
	// URI SAN that go-spiffe parses as a SPIFFE ID with a non-empty path,
	// not a CA, the digitalSignature key usage without keyCertSign or
	// cRLSign, and, when the leaf lists extended key usages, clientAuth
	// among them. Otherwise empty, and SPIFFEReason says why.
	SPIFFEID string
	// TrustDomain is the trust domain of SPIFFEID ("example.org").
	TrustDomain string
	// AnchorTrustDomain is the SPIFFE trust domain whose bundle holds the
	// trust anchor of the verified chain (SPIFFEID is then of that same
	// domain: an authority vouches for its own trust domain only); empty
	// when the anchor is a plain CA (a PEM bundle, a truststore, a pki CA),
	// which vouches for any SPIFFE ID it issues.
	AnchorTrustDomain string
	// SPIFFEReason explains why a leaf with URI SANs has no SPIFFE ID
	// (two URI SANs, a non-spiffe scheme, a serverAuth-only leaf, ...);
	// empty when SPIFFEID is set or the leaf has no URI SAN at all.
	SPIFFEReason string
	// spiffePath is the path of SPIFFEID without its leading slash.
	spiffePath string

	// DNSNames are the DNS SANs, lowercased.
	DNSNames []string
	// URIs are the URI SANs, as written in the certificate.
	URIs []string
	// Emails are the email SANs, lowercased.
	Emails []string
	// IPs are the IP SANs (IPv4-mapped IPv6 addresses unmapped).
	IPs []netip.Addr

	// Subject is the full subject DN in RFC 2253 form ("CN=web,O=Acme").
	Subject string
	// CommonName is the subject CN.
	CommonName string
	// Organizations and OrganizationalUnits are the subject O and OU values.
	Organizations       []string
	OrganizationalUnits []string
	// Issuer is the full issuer DN in RFC 2253 form.
	Issuer string
	// IssuerCommonName is the issuer CN.
	IssuerCommonName string
	// Serial is the serial number in lowercase hex, without colons.
	Serial string

	// Fingerprint is the SHA-256 of the certificate's DER bytes.
	Fingerprint [sha256.Size]byte
	// SPKI is the SHA-256 of the certificate's SubjectPublicKeyInfo.
	SPKI [sha256.Size]byte
	// FingerprintHex and SPKIHex are the same in lowercase hex.
	FingerprintHex string
	SPKIHex        string

	NotBefore time.Time
	NotAfter  time.Time

	// Raw is the leaf's DER encoding.
	Raw []byte
	// Chain is the DER encoding of the rest of the verified chain the
	// identity was built from: the issuers of the leaf up to and including
	// the trust anchor, in TLS order (issuer of the leaf first).
	Chain [][]byte

	lazy lazyValues
}

// NewIdentity builds the identity of a verified leaf certificate. chain is
// the verified chain the leaf heads (verifiedChains[0]); it may be nil.
// Callers must only pass a certificate that crypto/tls (or
// x509.Certificate.Verify) verified: this function does not verify.
func NewIdentity(leaf *x509.Certificate, chain []*x509.Certificate) *Identity {
	computed.Add(1)
	id := &Identity{
		Subject:          leaf.Subject.String(),
		CommonName:       leaf.Subject.CommonName,
		Issuer:           leaf.Issuer.String(),
		IssuerCommonName: leaf.Issuer.CommonName,
		Serial:           material.SerialString(leaf),
		NotBefore:        leaf.NotBefore,
		NotAfter:         leaf.NotAfter,
		Raw:              leaf.Raw,
		Fingerprint:      sha256.Sum256(leaf.Raw),
		SPKI:             sha256.Sum256(leaf.RawSubjectPublicKeyInfo),
	}
	id.FingerprintHex = hex.EncodeToString(id.Fingerprint[:])
	id.SPKIHex = hex.EncodeToString(id.SPKI[:])
	id.Organizations = append([]string(nil), leaf.Subject.Organization...)
	id.OrganizationalUnits = append([]string(nil), leaf.Subject.OrganizationalUnit...)
	for _, n := range leaf.DNSNames {
		id.DNSNames = append(id.DNSNames, strings.ToLower(n))
	}
	for _, u := range leaf.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	for _, e := range leaf.EmailAddresses {
		id.Emails = append(id.Emails, strings.ToLower(e))
	}
	for _, ip := range leaf.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			id.IPs = append(id.IPs, a.Unmap())
		}
	}
	if len(chain) > 1 {
		id.Chain = make([][]byte, 0, len(chain)-1)
		for _, c := range chain[1:] {
			id.Chain = append(id.Chain, c.Raw)
		}
	}
	if len(leaf.URIs) > 0 {
		if svid, err := verify.SVID(leaf, x509.ExtKeyUsageClientAuth); err != nil {
			id.SPIFFEReason = err.Error()
		} else {
			id.SPIFFEID = svid.String()
			id.TrustDomain = svid.TrustDomain().Name()
			id.spiffePath = strings.TrimPrefix(svid.Path(), "/")
		}
	}
	return id
}

// FromChains returns the identity of the first chain crypto/tls verified
// that may vouch for its leaf (verify.Scope: a chain anchored at a SPIFFE
// bundle's authority only for an X509-SVID of that authority's trust
// domain), or nil: an unverified peer, or one whose chain vouches for
// nothing, has no identity.
func FromChains(verifiedChains [][]*x509.Certificate) *Identity {
	id, _ := fromChains(verifiedChains)
	return id
}

// FromState returns the identity of the connection's verified peer, or
// nil: from the verification recorded for this handshake (verify.Lookup:
// live_trust, or a verifier whose verdict depends on changing material),
// re-checked first when that material changed, or else from crypto/tls's
// VerifiedChains; never from what the peer merely presented.
func FromState(cs *tls.ConnectionState) *Identity {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil
	}
	if rec := verify.Lookup(cs.PeerCertificates[0].Raw); rec != nil {
		if rec.Recheck() != nil {
			return nil
		}
		return fromRecord(rec)
	}
	return FromChains(cs.VerifiedChains)
}

// fromRecord is the identity of a live_trust verification, built once and
// kept in the record (which lives as long as the connection's buffer).
func fromRecord(rec *verify.Verified) *Identity {
	if m := rec.Memo(); m != nil {
		return m.(*Identity)
	}
	return rec.SetMemo(anchoredIdentity(rec.Chain, rec.TrustDomain)).(*Identity)
}

// The identity cache of chains crypto/tls verified, keyed by a weak
// pointer to the handshake's one *x509.Certificate (README, "Once per
// connection"): a runtime cleanup removes the entry when it is collected.
// A SHA-256 key would hash the certificate per request, and a
// *tls.ConnectionState key would miss (each consumer holds its own copy).
// A chain that vouches for nothing is cached too (as the error saying why).
var (
	cache    sync.Map // weak.Pointer[x509.Certificate] -> *Identity or error
	computed atomic.Int64
)

// fromChains returns the identity of crypto/tls's verified chains, or the
// reason they vouch for no identity.
func fromChains(verifiedChains [][]*x509.Certificate) (*Identity, error) {
	if len(verifiedChains) == 0 || len(verifiedChains[0]) == 0 {
		return nil, nil
	}
	leaf := verifiedChains[0][0]
	key := weak.Make(leaf)
	v, ok := cache.Load(key)
	if !ok {
		if chain, td, err := verify.Scope(verifiedChains, x509.ExtKeyUsageClientAuth); err != nil {
			v = err
		} else {
			v = anchoredIdentity(chain, td)
		}
		if prev, loaded := cache.LoadOrStore(key, v); loaded {
			v = prev
		} else {
			runtime.AddCleanup(leaf, func(k weak.Pointer[x509.Certificate]) { cache.Delete(k) }, key)
		}
	}
	if err, refused := v.(error); refused {
		return nil, err
	}
	return v.(*Identity), nil
}

// anchoredIdentity is the identity of a verified chain whose anchor is of
// the SPIFFE trust domain td ("" for a plain CA).
func anchoredIdentity(chain []*x509.Certificate, td string) *Identity {
	id := NewIdentity(chain[0], chain)
	id.AnchorTrustDomain = td
	return id
}

// values returns the values of a list field of id: dns, uri, email, ip,
// o, ou.
func (id *Identity) values(f Field) []string {
	switch f {
	case FieldDNS:
		return id.DNSNames
	case FieldURI:
		return id.URIs
	case FieldEmail:
		return id.Emails
	case FieldOrganization:
		return id.Organizations
	case FieldOrganizationalUnit:
		return id.OrganizationalUnits
	case FieldIP:
		out := make([]string, len(id.IPs))
		for i, a := range id.IPs {
			out[i] = a.String()
		}
		return out
	}
	return nil
}

// parsedDN returns the subject (or issuer) DN of id split into RDNs, for
// the subject and issuer patterns; parsed on first use. (Go prints every
// DN in a form parseDN reads; anything else is an empty DN, which no
// pattern matches.)
func (id *Identity) parsedDN(f Field) *dn {
	id.lazy.dnOnce.Do(func() {
		id.lazy.subject, _ = parseDN(id.Subject, false)
		id.lazy.issuer, _ = parseDN(id.Issuer, false)
	})
	if f == FieldIssuer {
		return &id.lazy.issuer
	}
	return &id.lazy.subject
}

// lazyValues holds what some consumers need and others never do (header
// values, parsed DNs), each built on first use.
type lazyValues struct {
	replOnce                             sync.Once
	repl                                 caddy.ReplacerFunc // {peer.*} provider
	xfcc                                 atomic.Pointer[xfccMemo]
	certOnce, chainOnce, pemOnce, dnOnce sync.Once
	clientCert                           string // RFC 9440 Client-Cert value
	clientCertChain                      string // RFC 9440 Client-Cert-Chain value
	pemEscaped                           string // URL-encoded PEM of the leaf
	subject, issuer                      dn
}
