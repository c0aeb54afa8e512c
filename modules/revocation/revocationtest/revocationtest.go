// Package revocationtest makes revocation data for tests: CRLs by a test
// CA, and an OCSP responder for the certificates of one CA whose answers a
// test steers (status per certificate, failure modes, delegated signer).
package revocationtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/trustline/trustline/internal/testpki"
)

var crlNumber atomic.Int64

// CRL is a DER CRL by ca revoking the given certificates. CRL numbers
// increase with every call, so a later CRL supersedes an earlier one.
func CRL(t testing.TB, ca *testpki.CA, nextUpdate time.Time, revoked ...*x509.Certificate) []byte {
	t.Helper()
	return CRLOf(t, ca, NextNumber(), time.Now().Add(-time.Minute), nextUpdate, revoked...)
}

// NextNumber is the CRL number the next CRL would carry (numbers taken
// here are never given again).
func NextNumber() *big.Int { return big.NewInt(crlNumber.Add(1)) }

// CRLOf is a DER CRL by ca with the given CRL number and thisUpdate,
// revoking the given certificates. A nil number leaves the CRL number
// extension out (crypto/x509 always writes one: it is taken out and the
// CRL signed again).
func CRLOf(t testing.TB, ca *testpki.CA, number *big.Int, thisUpdate, nextUpdate time.Time, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: number, ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	if number == nil {
		tmpl.Number = big.NewInt(1)
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if number == nil {
		der = withoutNumber(t, ca, der)
	}
	return der
}

// withoutNumber signs der again without its CRL number extension.
func withoutNumber(t testing.TB, ca *testpki.CA, der []byte) []byte {
	t.Helper()
	var outer, tbs []asn1.RawValue // CertificateList, TBSCertList
	if _, err := asn1.Unmarshal(der, &outer); err != nil || len(outer) != 3 {
		t.Fatalf("CRL: %v", err)
	}
	if _, err := asn1.Unmarshal(outer[0].FullBytes, &tbs); err != nil {
		t.Fatalf("TBSCertList: %v", err)
	}
	last := &tbs[len(tbs)-1] // [0] EXPLICIT Extensions
	var exts []pkix.Extension
	if _, err := asn1.Unmarshal(last.Bytes, &exts); err != nil {
		t.Fatalf("CRL extensions: %v", err)
	}
	kept := exts[:0]
	for _, e := range exts {
		if !e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 20}) { // cRLNumber
			kept = append(kept, e)
		}
	}
	seq, err := asn1.Marshal(kept)
	if err != nil {
		t.Fatal(err)
	}
	*last = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: seq}
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(tbsDER)
	sig, err := ecdsa.SignASN1(rand.Reader, ca.Key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	out, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm asn1.RawValue
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbsDER}, outer[1], asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// BadSignature is der with the last byte of its signature changed: it
// still parses, and its signature verifies against no key.
func BadSignature(der []byte) []byte {
	out := append([]byte(nil), der...)
	out[len(out)-1] ^= 0x01
	return out
}

// PEM encodes DER CRLs as consecutive "X509 CRL" blocks.
func PEM(ders ...[]byte) []byte {
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: d})...)
	}
	return out
}

// DistributionPoint names url as the certificate's CRL distribution point.
func DistributionPoint(url string) testpki.Option {
	return func(c *x509.Certificate) { c.CRLDistributionPoints = []string{url} }
}

// ClosedURL is an http URL on which nothing listens.
func ClosedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/ocsp"
}

// Responder is an OCSP responder for the certificates of one CA, built
// with ocsp.CreateResponse, answering GET and POST requests.
type Responder struct {
	*httptest.Server

	// Hits counts the requests received.
	Hits atomic.Int64

	ca       *testpki.CA
	now      func() time.Time
	impostor *testpki.CA
	mu       sync.Mutex
	status   map[string]int // serial (hex) -> ocsp.Good / ocsp.Revoked; others Unknown
	mode     string
	next     time.Duration // nextUpdate - now; -1: no nextUpdate
	signer   *testpki.Leaf // delegated responder (nil: the CA signs)
	methods  []string
	block    chan struct{} // when set, every request waits for it
}

// NewResponder starts a responder for ca, closed when t ends. now is its
// clock (nil: time.Now); it answers Unknown for every certificate until
// Set, with a nextUpdate an hour after now.
func NewResponder(t testing.TB, ca *testpki.CA, now func() time.Time) *Responder {
	if now == nil {
		now = time.Now
	}
	r := &Responder{ca: ca, now: now, status: map[string]int{}, next: time.Hour}
	r.impostor = testpki.NewCA(t, ca.Cert.Subject.CommonName)
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

// Set makes the responder answer status (ocsp.Good, ocsp.Revoked) about c.
func (r *Responder) Set(c *x509.Certificate, status int) {
	r.locked(func() { r.status[c.SerialNumber.Text(16)] = status })
}

func (r *Responder) locked(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// SetMode makes the responder misbehave: "503" (HTTP error), "trylater"
// (OCSP tryLater), "garbage" (not OCSP), "hang" (no answer), "expired"
// (past nextUpdate), "future" (thisUpdate ahead), "wrongserial" (about
// another serial), "badsig" (signed by an impostor of the CA),
// "otherissuer" (about a certificate of another issuer); "" behaves.
func (r *Responder) SetMode(m string) { r.locked(func() { r.mode = m }) }

// SetNextUpdate sets how far after now the answers' nextUpdate is; -1
// leaves it out.
func (r *Responder) SetNextUpdate(d time.Duration) { r.locked(func() { r.next = d }) }

// SetSigner makes a delegated responder certificate sign the answers (nil:
// the CA itself).
func (r *Responder) SetSigner(l *testpki.Leaf) { r.locked(func() { r.signer = l }) }

// Block holds every request until release is closed (nil: none waits).
func (r *Responder) Block(release chan struct{}) { r.locked(func() { r.block = release }) }

// Methods are the HTTP methods of the requests received, in order.
func (r *Responder) Methods() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.methods...)
}

func (r *Responder) serve(w http.ResponseWriter, req *http.Request) {
	r.Hits.Add(1)
	r.mu.Lock()
	r.methods = append(r.methods, req.Method)
	mode, next, signer, block := r.mode, r.next, r.signer, r.block
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-req.Context().Done():
			return
		}
	}
	var der []byte
	var err error
	if req.Method == http.MethodPost {
		der, err = io.ReadAll(req.Body)
	} else {
		der, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(req.URL.Path, "/"))
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q, err := ocsp.ParseRequest(der)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch mode {
	case "503":
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case "trylater":
		_, _ = w.Write(ocsp.TryLaterErrorResponse)
		return
	case "garbage":
		_, _ = w.Write([]byte("not an OCSP response"))
		return
	case "hang":
		<-req.Context().Done()
		return
	}
	now := r.now()
	r.mu.Lock()
	status, ok := r.status[q.SerialNumber.Text(16)]
	r.mu.Unlock()
	if !ok {
		status = ocsp.Unknown
	}
	tmpl := ocsp.Response{
		Status:       status,
		SerialNumber: q.SerialNumber,
		ThisUpdate:   now.Add(-time.Minute),
		RevokedAt:    now.Add(-time.Hour),
	}
	if status == ocsp.Revoked {
		tmpl.RevocationReason = ocsp.KeyCompromise
	}
	if next >= 0 {
		tmpl.NextUpdate = now.Add(next)
	}
	issuer, respCert, key := r.ca.Cert, r.ca.Cert, crypto.Signer(r.ca.Key)
	if signer != nil {
		respCert, key, tmpl.Certificate = signer.Cert, signer.Key, signer.Cert
	}
	switch mode {
	case "expired":
		tmpl.ThisUpdate, tmpl.NextUpdate = now.Add(-2*time.Hour), now.Add(-time.Hour)
	case "future":
		tmpl.ThisUpdate = now.Add(time.Hour)
	case "wrongserial":
		tmpl.SerialNumber = new(big.Int).Add(q.SerialNumber, big.NewInt(1))
	case "badsig":
		respCert, key = r.impostor.Cert, r.impostor.Key
	case "otherissuer":
		issuer = r.impostor.Cert
	}
	resp, err := ocsp.CreateResponse(issuer, respCert, tmpl, key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(resp)
}

// CRLServer is a CRL distribution point serving a CRL that a test
// replaces, closed when the test ends.
type CRLServer struct {
	*httptest.Server

	// Hits counts the downloads served.
	Hits atomic.Int64

	mu  sync.Mutex
	der []byte
}

// NewCRLServer serves der (see Serve) until the test ends.
func NewCRLServer(t testing.TB, der []byte) *CRLServer {
	s := &CRLServer{der: der}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		der := s.der
		s.mu.Unlock()
		_, _ = w.Write(der)
		s.Hits.Add(1)
	}))
	t.Cleanup(s.Close)
	return s
}

// Serve makes the server answer der from now on.
func (s *CRLServer) Serve(der []byte) {
	s.mu.Lock()
	s.der = der
	s.mu.Unlock()
}

// Refreshed waits, up to timeout, until the server's one client (a
// verifier's refresh, which downloads one CRL at a time) has taken in
// what it serves now: a second download after the call means the first
// one was handled.
func (s *CRLServer) Refreshed(t testing.TB, timeout time.Duration) {
	t.Helper()
	before := s.Hits.Load()
	deadline := time.Now().Add(timeout)
	for s.Hits.Load() < before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d downloads within %s, want 2", s.URL, s.Hits.Load()-before, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
