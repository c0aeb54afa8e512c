package revocation

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// The successor rule (README.md): a CRL takes over from the one in force
// for its issuer only when that issuer issued and signed it and it is not
// older. crlLine applies it to the CRLs of one issuer from one source.

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
	named := slices.DeleteFunc(slices.Clone(next), func(e *crlEntry) bool { return !bytes.Equal(e.list.RawIssuer, issuer.RawSubject) })
	if len(named) == 0 {
		return refuse("issuer", "the CRL is issued by %q, not by the certificates' issuer %q", next[0].list.Issuer, issuer.Subject)
	}
	nextSpan, err := spanSignedBy(named, issuer)
	if nextSpan == nil {
		return refuse("signature", "the CRL of %q is not signed by the issuer certificate (key of %q): %v", named[0].list.Issuer, issuer.Subject, err)
	}
	prevSpan, _ := spanSignedBy(prev, issuer)
	switch {
	case prevSpan == nil:
		return nil // the first CRL of this issuer
	case prevSpan.loNumber != nil && nextSpan.unnumbered:
		return refuse("number_missing", "the new CRL of %q has no CRL number, the one in force has %s: refusing a CRL that cannot be ordered after it", issuer.Subject, prevSpan.hiNumber)
	case prevSpan.loNumber != nil && nextSpan.loNumber != nil && (nextSpan.loNumber.Cmp(prevSpan.loNumber) < 0 || nextSpan.hiNumber.Cmp(prevSpan.hiNumber) < 0):
		return refuse("number", "the new CRL of %q has number %s, lower than %s in force: refusing to step back to an older CRL", issuer.Subject, nextSpan.loNumber, prevSpan.hiNumber)
	case nextSpan.first.Before(prevSpan.first) || nextSpan.last.Before(prevSpan.last):
		return refuse("this_update", "the new CRL of %q was issued at %s, before the one in force (%s): refusing to step back to an older CRL", issuer.Subject,
			material.TimeString(nextSpan.first), material.TimeString(prevSpan.last))
	}
	return nil
}

// crlSpan is what the successor rule compares of a set of CRLs.
type crlSpan struct {
	loNumber, hiNumber *big.Int // among those that have one (nil: none has)
	unnumbered         bool     // some have none
	first, last        time.Time
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
		n, t := e.list.Number, e.list.ThisUpdate
		if s == nil {
			s = &crlSpan{first: t, last: t}
		}
		switch {
		case n == nil:
			s.unnumbered = true
		case s.loNumber == nil:
			s.loNumber, s.hiNumber = n, n
		case n.Cmp(s.loNumber) < 0:
			s.loNumber = n
		case n.Cmp(s.hiNumber) > 0:
			s.hiNumber = n
		}
		if t.Before(s.first) {
			s.first = t
		}
		if t.After(s.last) {
			s.last = t
		}
	}
	return s, lastErr
}

// maxPending bounds the versions a line holds while its issuer is not
// known; beyond it, the oldest but the first (the one read at start) go.
const maxPending = 16

// crlLine is the succession of CRLs of one issuer (by name) from one
// source: a CRL file or a distribution point. Until a handshake has named
// the issuer, the versions read wait unchecked (README.md, "Where the
// issuer's certificate comes from").
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
	if prev := l.view.Swap(v); !slices.Equal(prev.entries, v.entries) {
		crlChanged()
	}
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
			l.pending = slices.Delete(l.pending, 1, 2)
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
	if !slices.ContainsFunc(l.pending, func(p []*crlEntry) bool { s, _ := spanSignedBy(p, issuer); return s != nil }) {
		return l.pending[len(l.pending)-1] // issuer is not this line's signer: decide nothing
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
	l.report(es[0], r)
}

// report logs and counts a refusal of the CRLs of e's issuer.
func (l *crlLine) report(e *crlEntry, r *refusal) {
	crlRefused.WithLabelValues(l.origin, r.reason).Inc()
	l.logger.Error("CRL refused; keeping the last good one", zap.String("origin", l.origin), zap.String("source", l.source),
		zap.String("issuer", e.list.Issuer.String()), zap.String("reason", r.reason), zap.Error(r.err))
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
	l.report(es[0], refuse("issuer", "the new version has no CRL of %q, which the version in force has: its CRL stays in force (to stop checking it, take the file out of the config)", es[0].list.Issuer))
}
