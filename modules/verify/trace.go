package verify

import (
	"crypto/x509"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustline/trustline/modules/material"
)

// explain runs the real verifiers with a Trace attached to the leaf's DER
// buffer (keyed as Record is): a verifier that finds it (TraceFor) adds
// its steps instead of logging or counting, and revocation fetches
// nothing. Outside explain, TraceFor is one atomic load.

// Trace collects the steps of one explained verification.
type Trace struct {
	mu    sync.Mutex
	steps []Step
}

// The verdicts of a step, beyond VerdictAdmitted, VerdictRefused and
// VerdictShadow.
const (
	// VerdictSoftFail: no usable revocation status, let through by a
	// soft_fail option.
	VerdictSoftFail = "soft_fail"
	// VerdictUnknown: the step cannot tell without fetching (explain
	// fetches nothing) or without running what it describes.
	VerdictUnknown = "unknown"
	// VerdictInfo: the step reports a fact and decides nothing.
	VerdictInfo = "info"
)

// Step is one verifier's (or one check's) verdict, with what it saw.
type Step struct {
	// Stage groups steps: listener, passthrough, tls, chain, identity,
	// revocation, route, policy, headers, upstream, verdict.
	Stage string `json:"stage"`
	// Name is who decided: crypto/tls, live_trust, peer, crl, ocsp,
	// peer_authorize, a matcher or handler name.
	Name string `json:"name"`
	// Verdict is admitted, refused, shadow, soft_fail, unknown or info.
	Verdict string `json:"verdict"`
	// Reason is the reason class of a refusal (a Reason constant), as in
	// the `reason` field of the refusal logs and the `reason` label of
	// the verdict metrics.
	Reason string `json:"reason,omitempty"`
	// Detail says what exactly, in words.
	Detail string `json:"detail,omitempty"`
	// Chain is the chain built (leaf first, trust anchor last).
	Chain []Cert `json:"chain,omitempty"`
	// Anchors are the pool's anchors, when no chain was built.
	Anchors []Cert `json:"anchors,omitempty"`
	// Checks are the individual comparisons (identity patterns,
	// revocation per certificate, headers set).
	Checks []Check `json:"checks,omitempty"`
}

// Check is one comparison within a step.
type Check struct {
	// Name is what is compared (a pattern field, a certificate, a header).
	Name string `json:"name"`
	// Want is what the configuration asks for.
	Want string `json:"want,omitempty"`
	// Have is what the client (or the request) has.
	Have string `json:"have,omitempty"`
	// OK tells whether the comparison passed.
	OK bool `json:"ok"`
}

// Cert describes a certificate in a step.
type Cert struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// SubjectKeyID and AuthorityKeyID in hex ("" when absent).
	SubjectKeyID   string `json:"subject_key_id,omitempty"`
	AuthorityKeyID string `json:"authority_key_id,omitempty"`
	// Source says which trust pool source (and file) holds an anchor.
	Source string `json:"source,omitempty"`
}

// DescribeCerts describes certs, in order.
func DescribeCerts(certs []*x509.Certificate) []Cert {
	out := make([]Cert, 0, len(certs))
	for _, c := range certs {
		out = append(out, Cert{
			Subject:        c.Subject.String(),
			Issuer:         c.Issuer.String(),
			Serial:         material.SerialString(c),
			NotBefore:      c.NotBefore.UTC(),
			NotAfter:       c.NotAfter.UTC(),
			SubjectKeyID:   keyID(c.SubjectKeyId),
			AuthorityKeyID: keyID(c.AuthorityKeyId),
		})
	}
	return out
}

// keyID is a key identifier in colon-separated hex.
func keyID(b []byte) string { return strings.ReplaceAll(fmt.Sprintf("% x", b), " ", ":") }

// Add appends a step.
func (t *Trace) Add(s Step) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.steps = append(t.steps, s)
}

// Steps returns the steps so far, in order.
func (t *Trace) Steps() []Step {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Step(nil), t.steps...)
}

var (
	traces       sync.Map // weak.Pointer[byte] -> *Trace
	tracesActive atomic.Int64
)

// AttachTrace attaches t to the leaf DER buffer leafRaw (the very slice
// explain hands the verifiers as PeerCertificates[0].Raw and rawCerts[0])
// until detach is called.
func AttachTrace(leafRaw []byte, t *Trace) (detach func()) {
	if len(leafRaw) == 0 {
		return func() {}
	}
	key := leafKey(leafRaw)
	traces.Store(key, t)
	tracesActive.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			traces.Delete(key)
			tracesActive.Add(-1)
			runtime.KeepAlive(leafRaw)
		})
	}
}

// TraceFor returns the trace attached to the handshake whose leaf DER is
// leafRaw, or nil (always, outside explain).
func TraceFor(leafRaw []byte) *Trace {
	if tracesActive.Load() == 0 {
		return nil
	}
	return loadByLeaf[Trace](&traces, leafRaw)
}

// OriginTeller is a trust pool source that can say where one of its
// anchors comes from (its kind, name and file), for explain.
type OriginTeller interface {
	AnchorOrigin(anchor *x509.Certificate) string
}

// AnchorDomain is the SPIFFE trust domain whose bundle (in the version
// that holds this very object) lists anchor, or "" for a plain CA.
func AnchorDomain(anchor *x509.Certificate) string {
	td, ok := authorityDomain(anchor)
	if !ok || td == conflicting {
		return ""
	}
	return td.Name()
}
