package material

import (
	"crypto/x509"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
	"weak"
)

// A live-pool client verifier (tls.client_auth.verifier.live_trust) runs
// with crypto/tls in RequireAnyClientCert mode, because Caddy hands
// crypto/tls a trust pool only once, at provision. crypto/tls then leaves
// ConnectionState.VerifiedChains empty, although the verifier did verify
// the chain. The verifier hands its result, the chain that verification
// returned (trust anchor included), to every later consumer of the same
// connection through RecordVerified and LookupVerified.
//
// A record belongs to its handshake: it is keyed by a weak pointer to the
// leaf's DER bytes, the very buffer crypto/tls parsed this handshake's
// certificates from (a fresh copy of the handshake message, or of the
// session ticket on a resumption). Every later ConnectionState of the
// connection (r.TLS in net/http, caddy-l4's connection states, Caddy's
// verifiers) points at that same buffer through PeerCertificates[0].Raw.
// A weak pointer names one object, not an address: a later handshake
// whose buffer happens to land at the same address, with the same bytes,
// gets a different key, so a record never outlives its buffer's object
// and never vouches for another connection. The record is removed by a
// runtime cleanup when the buffer is collected, i.e. when the connection
// (and any session state holding its certificates) is gone.

// Verified is one verification of a peer's chain made outside crypto/tls's
// own chain building. It is immutable once recorded.
type Verified struct {
	// Chain is the chain that verification returned: the leaf first, then
	// its issuers up to and including the trust anchor. Never the
	// certificates the peer merely presented.
	Chain []*x509.Certificate
	// TrustDomain is the SPIFFE trust domain whose bundle holds the anchor
	// (the leaf's SPIFFE ID is then of that domain); empty when the anchor
	// belongs to a plain pool.
	TrustDomain string

	memo atomic.Value
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

var (
	verifiedRecords sync.Map     // weak.Pointer[byte] -> *Verified
	verifiedLive    atomic.Int64 // records not yet cleaned up, for tests
)

// RecordVerified records v as the verification of the handshake whose
// leaf DER is leafRaw: the very slice crypto/tls handed the verifier
// (PeerCertificates[0].Raw), not a copy.
func RecordVerified(leafRaw []byte, v *Verified) {
	if len(leafRaw) == 0 || v == nil || len(v.Chain) == 0 {
		return
	}
	p := unsafe.SliceData(leafRaw)
	key := weak.Make(p)
	if _, loaded := verifiedRecords.Swap(key, v); !loaded {
		verifiedLive.Add(1)
		runtime.AddCleanup(p, func(k weak.Pointer[byte]) {
			verifiedRecords.Delete(k)
			verifiedLive.Add(-1)
		}, key)
	}
	runtime.KeepAlive(leafRaw)
}

// LookupVerified returns the verification recorded for the handshake whose
// leaf DER is leafRaw (PeerCertificates[0].Raw of any ConnectionState of
// that connection), or nil: nothing outside crypto/tls verified it.
func LookupVerified(leafRaw []byte) *Verified {
	if len(leafRaw) == 0 {
		return nil
	}
	v, ok := verifiedRecords.Load(weak.Make(unsafe.SliceData(leafRaw)))
	runtime.KeepAlive(leafRaw)
	if !ok {
		return nil
	}
	return v.(*Verified)
}
