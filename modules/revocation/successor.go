package revocation

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// The successor rule. Every CRL, read from a file or fetched from a
// distribution point, takes over from the one in force for its issuer only
// when it is
//
//   - issued and signed by that issuer: the CA certificate of the verified
//     chain that the CRL covers (a CRL names its issuer; its signature must
//     verify against that certificate's key);
//   - not older: its CRL number is not lower than the one in force, and it
//     has one when the one in force had one; its thisUpdate is not earlier.
//
// A CRL refused is logged once (per distinct content) and counted in
// trustline_peer_crl_refused_total{origin,reason}; the one in force stays.
// The rule lives in successor; crlLine applies it to the CRLs of one
// issuer from one source, for files and distribution points alike.

// refusal is why the successor rule refused a CRL.
type refusal struct {
	reason string // metric label: issuer, signature, number, number_missing, this_update
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }

func refuse(reason, format string, args ...any) *refusal {
	return &refusal{reason: reason, err: fmt.Errorf(format, args...)}
}

// successor decides whether next, the CRLs of one issuer in a new version
// (one for a distribution point; a file may hold, say, a base CRL and
// another of the same issuer), may take over from prev, those in force
// (none at first), for the CA certificate issuer. The CRLs of next that
// issuer did not sign are left in (another key of the same name may have:
// each CRL is checked against the issuer of every chain it is used for),
// but at least one must be issuer's, and it is those that are compared:
// neither the lowest nor the highest CRL number steps back, nor the
// earliest or latest thisUpdate.
func successor(prev, next []*crlEntry, issuer *x509.Certificate) *refusal {
	var named []*crlEntry
	for _, e := range next {
		if bytes.Equal(e.list.RawIssuer, issuer.RawSubject) {
			named = append(named, e)
		}
	}
	if len(named) == 0 {
		return refuse("issuer", "the CRL is issued by %q, not by the certificates' issuer %q", next[0].list.Issuer, issuer.Subject)
	}
	nextSpan, err := spanSignedBy(named, issuer)
	if nextSpan == nil {
		return refuse("signature", "the CRL of %q is not signed by the issuer certificate (key of %q): %v", named[0].list.Issuer, issuer.Subject, err)
	}
	prevSpan, _ := spanSignedBy(prev, issuer)
	if prevSpan == nil {
		return nil // the first CRL of this issuer
	}
	switch {
	case prevSpan.numbered && nextSpan.unnumbered:
		return refuse("number_missing", "the new CRL of %q has no CRL number, the one in force has %s: refusing a CRL that cannot be ordered after it", issuer.Subject, prevSpan.hiNumber)
	case prevSpan.numbered && nextSpan.numbered && (nextSpan.loNumber.Cmp(prevSpan.loNumber) < 0 || nextSpan.hiNumber.Cmp(prevSpan.hiNumber) < 0):
		return refuse("number", "the new CRL of %q has number %s, lower than %s in force: refusing to step back to an older CRL", issuer.Subject, nextSpan.loNumber, prevSpan.hiNumber)
	case nextSpan.first.Before(prevSpan.first) || nextSpan.last.Before(prevSpan.last):
		return refuse("this_update", "the new CRL of %q was issued at %s, before the one in force (%s): refusing to step back to an older CRL", issuer.Subject,
			material.TimeString(nextSpan.first), material.TimeString(prevSpan.last))
	}
	return nil
}

// crlSpan is what the successor rule compares of a set of CRLs.
type crlSpan struct {
	numbered, unnumbered bool     // some have a CRL number; some have none
	loNumber, hiNumber   *big.Int // among those that have one
	first, last          time.Time
}

// spanSignedBy is the span of the CRLs of es that issuer signed; nil (and
// the last signature error) when it signed none.
func spanSignedBy(es []*crlEntry, issuer *x509.Certificate) (*crlSpan, error) {
	var s *crlSpan
	var lastErr error
	for _, e := range es {
		if err := e.signedBy(issuer); err != nil {
			lastErr = err
			continue
		}
		if s == nil {
			s = &crlSpan{first: e.list.ThisUpdate, last: e.list.ThisUpdate}
		}
		if n := e.list.Number; n != nil {
			if !s.numbered || n.Cmp(s.loNumber) < 0 {
				s.loNumber = n
			}
			if !s.numbered || n.Cmp(s.hiNumber) > 0 {
				s.hiNumber = n
			}
			s.numbered = true
		} else {
			s.unnumbered = true
		}
		if e.list.ThisUpdate.Before(s.first) {
			s.first = e.list.ThisUpdate
		}
		if e.list.ThisUpdate.After(s.last) {
			s.last = e.list.ThisUpdate
		}
	}
	return s, lastErr
}

// maxPending bounds the versions a line holds while its issuer is not
// known; beyond it, the oldest but the first (the one read at start) go.
const maxPending = 16

// crlLine is the succession of CRLs of one issuer (by name) from one
// source: a CRL file or a distribution point. It holds the CRLs in force,
// checked against the issuer certificate, and, until a handshake has
// named the issuer (a CRL file read at start, or replaced before the first
// client of that issuer came), the versions read since, unchecked: the
// first handshake whose chain's issuer signed one of them applies the
// successor rule to each in turn, and from then on every new version is
// checked as it is read.
type crlLine struct {
	origin, source string // "file" or "distribution_point"; the path or URL
	logger         *zap.Logger

	mu          sync.Mutex
	issuer      *x509.Certificate // signed good; nil until a handshake named it
	good        []*crlEntry       // in force: checked against issuer
	pending     [][]*crlEntry     // read while issuer was unknown, oldest first
	lastRefused [32]byte          // digest of the last CRL refused (logged once)
	absent      bool              // the source's version in force has no CRL of this issuer

	view atomic.Pointer[lineView] // what handshakes read, lock-free
}

// lineView is a line as handshakes read it.
type lineView struct {
	entries []*crlEntry // in force, or the newest unchecked ones
	settled bool        // nothing waits for the issuer
}

func newCRLLine(origin, source string, logger *zap.Logger) *crlLine {
	l := &crlLine{origin: origin, source: source, logger: logger}
	l.view.Store(&lineView{settled: true})
	return l
}

// publish updates the view; l.mu is held.
func (l *crlLine) publish() {
	v := &lineView{entries: l.good, settled: len(l.pending) == 0}
	if !v.settled {
		v.entries = l.pending[len(l.pending)-1]
	}
	if prev := l.view.Swap(v); prev != nil && !sameEntries(prev.entries, v.entries) {
		crlChanged()
	}
}

func sameEntries(a, b []*crlEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// offer gives the line a new version of its CRLs. With the issuer known
// (from the line, or from the handshake that fetched it: issuer), the
// successor rule decides at once; otherwise the version waits for the
// first handshake. It returns the refusal, if any (logged and counted).
func (l *crlLine) offer(next []*crlEntry, issuer *x509.Certificate) *refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.absent = false
	if l.issuer != nil {
		issuer = l.issuer
	}
	if issuer == nil {
		if len(l.pending) == maxPending {
			l.pending = append(l.pending[:1], l.pending[2:]...)
		}
		l.pending = append(l.pending, next)
		l.publish()
		return nil
	}
	if r := successor(l.good, next, issuer); r != nil {
		l.refused(next, r)
		return r
	}
	l.good, l.issuer = next, issuer
	l.publish()
	return nil
}

// inForce is what the line holds for certificates issued by issuer: the
// CRLs in force (each is still checked against issuer where it is used).
// While versions wait for the issuer, and issuer signed one of them, it
// settles them first.
func (l *crlLine) inForce(issuer *x509.Certificate) []*crlEntry {
	v := l.view.Load()
	if v.settled {
		return v.entries
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 { // settled meanwhile
		return l.good
	}
	claimed := false
	for _, p := range l.pending {
		if s, _ := spanSignedBy(p, issuer); s != nil {
			claimed = true
			break
		}
	}
	if !claimed { // issuer is not this line's signer: decide nothing
		return l.pending[len(l.pending)-1]
	}
	for _, p := range l.pending {
		if r := successor(l.good, p, issuer); r != nil {
			l.refused(p, r)
			continue
		}
		l.good, l.issuer = p, issuer
	}
	l.pending = nil
	l.publish()
	return l.good
}

// refused logs and counts a refused version, once per distinct content;
// l.mu is held.
func (l *crlLine) refused(es []*crlEntry, r *refusal) {
	h := sha256.New()
	for _, e := range es {
		h.Write(e.list.Raw)
	}
	var digest [32]byte
	h.Sum(digest[:0])
	if digest == l.lastRefused {
		return
	}
	l.lastRefused = digest
	crlRefused.WithLabelValues(l.origin, r.reason).Inc()
	l.logger.Error("CRL refused; keeping the last good one", zap.String("origin", l.origin), zap.String("source", l.source),
		zap.String("issuer", es[0].list.Issuer.String()), zap.String("reason", r.reason), zap.Error(r.err))
}

// missing records that a new version of the source has no CRL of this
// line's issuer: the CRLs in force stay (a CRL file cannot drop an
// issuer's CRL by leaving it out); logged and counted once, until a
// version holds the issuer's CRL again.
func (l *crlLine) missing() {
	l.mu.Lock()
	defer l.mu.Unlock()
	es := l.view.Load().entries
	if l.absent || len(es) == 0 {
		return
	}
	l.absent = true
	crlRefused.WithLabelValues(l.origin, "issuer").Inc()
	l.logger.Error("CRL refused; keeping the last good one", zap.String("origin", l.origin), zap.String("source", l.source),
		zap.String("issuer", es[0].list.Issuer.String()), zap.String("reason", "issuer"),
		zap.Error(fmt.Errorf("the new version has no CRL of %q, which the version in force has: its CRL stays in force (to stop checking it, take the file out of the config)", es[0].list.Issuer)))
}
