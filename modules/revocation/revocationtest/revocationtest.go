// Package revocationtest makes revocation data for tests: CRLs by a test
// CA, and an OCSP responder for the certificates of one CA whose answers a
// test steers (status per certificate, failure modes, delegated signer).
package revocationtest

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
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
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(crlNumber.Add(1)),
		ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: nextUpdate,
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
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
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status[c.SerialNumber.Text(16)] = status
}

// SetMode makes the responder misbehave: "503" (HTTP error), "trylater"
// (OCSP tryLater), "garbage" (not OCSP), "hang" (no answer), "expired"
// (past nextUpdate), "future" (thisUpdate ahead), "wrongserial" (about
// another serial), "badsig" (signed by an impostor of the CA),
// "otherissuer" (about a certificate of another issuer); "" behaves.
func (r *Responder) SetMode(m string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mode = m
}

// SetNextUpdate sets how far after now the answers' nextUpdate is; -1
// leaves it out.
func (r *Responder) SetNextUpdate(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next = d
}

// SetSigner makes a delegated responder certificate sign the answers (nil:
// the CA itself).
func (r *Responder) SetSigner(l *testpki.Leaf) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.signer = l
}

// Block holds every request until release is closed (nil: none waits).
func (r *Responder) Block(release chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.block = release
}

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
