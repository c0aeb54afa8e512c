package verify

import (
	"cmp"
	"crypto/x509"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
	"weak"
)

// A verifier outside crypto/tls's chain building (live_trust, under
// RequireAnyClientCert) leaves VerifiedChains empty: it hands the chain it
// verified (anchor included) to later consumers through Record and Lookup,
// as does a verifier whose verdict depends on changing material (`verifier
// peer`'s revocation checks). A record is keyed by a weak pointer to the
// leaf's DER buffer, which every ConnectionState of the connection shares
// as PeerCertificates[0].Raw (TestHandshakeBufferIdentity): it names one
// object, so it never vouches for another connection, and a runtime
// cleanup removes it with the buffer.

// Verified is one verification of a peer's chain, and what its verdict
// depends on. Chain and TrustDomain are immutable once recorded.
type Verified struct {
	// Chain is the chain that verification returned: the leaf first, then
	// its issuers up to and including the trust anchor. Never the
	// certificates the peer merely presented.
	Chain []*x509.Certificate
	// TrustDomain is the SPIFFE trust domain whose bundle holds the anchor
	// (the leaf's SPIFFE ID is then of that domain); empty when the anchor
	// is a plain CA.
	TrustDomain string

	memo    atomic.Value
	deps    atomic.Pointer[[]*dependency]
	mu      sync.Mutex // serializes DependOn and re-checks
	refused atomic.Pointer[Refusal]
}

// dependency is material the verdict was reached with: a re-check runs
// when its version is no longer the one the verdict saw.
type dependency struct {
	version func() any
	check   func(chain []*x509.Certificate) error
	seen    atomic.Pointer[any]
}

// Memo returns what a consumer derived from the record with SetMemo (the
// peer identity), or nil.
func (v *Verified) Memo() any { return v.memo.Load() }

// SetMemo stores m unless a memo is already set, and returns the memo in
// force: concurrent builders agree on one value.
func (v *Verified) SetMemo(m any) any {
	if v.memo.CompareAndSwap(nil, m) {
		return m
	}
	return v.memo.Load()
}

// DependOn says the verdict holds as long as check passes for the
// material version() returns: a pointer (or any comparable value) that
// changes whenever the material does. The version now is the one the
// verdict saw. version must be cheap: Recheck calls it on every request.
func (v *Verified) DependOn(version func() any, check func(chain []*x509.Certificate) error) {
	d := &dependency{version: version, check: check}
	seen := version()
	d.seen.Store(&seen)
	v.mu.Lock()
	defer v.mu.Unlock()
	var deps []*dependency
	if p := v.deps.Load(); p != nil {
		deps = append(deps, *p...)
	}
	deps = append(deps, d)
	v.deps.Store(&deps)
}

// Recheck tells whether the verdict still holds: while the material is
// unchanged it is a version compare per dependency; when some material
// changed, its check runs again on the recorded chain. A failure is final
// (a *Refusal): the connection has lost its verification.
func (v *Verified) Recheck() error {
	if r := v.refused.Load(); r != nil {
		return r
	}
	p := v.deps.Load()
	if p == nil {
		return nil
	}
	for _, d := range *p {
		if *d.seen.Load() != d.version() {
			return v.recheckSlow()
		}
	}
	return nil
}

func (v *Verified) recheckSlow() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r := v.refused.Load(); r != nil {
		return r
	}
	for _, d := range *v.deps.Load() {
		now := d.version()
		if *d.seen.Load() == now {
			continue
		}
		if err := d.check(v.Chain); err != nil {
			r, ok := err.(*Refusal)
			if !ok {
				r = refuse(cmp.Or(ReasonOf(err), ReasonOther), err)
			}
			v.refused.Store(r)
			return r
		}
		d.seen.Store(&now)
	}
	return nil
}

var records sync.Map // weak.Pointer[byte] -> *Verified

// Record records v as the verification of the handshake whose leaf DER
// is leafRaw, the very slice crypto/tls handed the verifier (not a copy),
// replacing an earlier record.
func Record(leafRaw []byte, v *Verified) {
	if len(leafRaw) == 0 || v == nil || len(v.Chain) == 0 {
		return
	}
	key := leafKey(leafRaw)
	if _, loaded := records.Swap(key, v); !loaded {
		runtime.AddCleanup(unsafe.SliceData(leafRaw), func(k weak.Pointer[byte]) { records.Delete(k) }, key)
	}
	runtime.KeepAlive(leafRaw)
}

// Lookup returns the verification recorded for the handshake whose leaf
// DER is leafRaw (PeerCertificates[0].Raw of any of its states), or nil.
func Lookup(leafRaw []byte) *Verified { return loadByLeaf[Verified](&records, leafRaw) }

// leafKey is the key of the leaf DER buffer leafRaw: the object, weakly.
func leafKey(leafRaw []byte) weak.Pointer[byte] { return weak.Make(unsafe.SliceData(leafRaw)) }

// loadByLeaf is the value of m (records, traces) for the buffer leafRaw.
func loadByLeaf[T any](m *sync.Map, leafRaw []byte) *T {
	if len(leafRaw) == 0 {
		return nil
	}
	v, ok := m.Load(leafKey(leafRaw))
	runtime.KeepAlive(leafRaw)
	if !ok {
		return nil
	}
	return v.(*T)
}
