package material

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"sync"
	"unsafe"
)

// A live-pool client verifier (tls.client_auth.verifier.live_trust) runs
// with crypto/tls in RequireAnyClientCert mode, because Caddy hands
// crypto/tls a trust pool only once, at provision. crypto/tls then leaves
// ConnectionState.VerifiedChains empty, although the verifier did verify
// the chain. The verifier records each handshake it verified here, and
// consumers of peer identity ask VerifiedLeaf instead of reading
// VerifiedChains directly.
//
// A record is keyed by the address of the leaf's DER bytes: crypto/tls
// parses the client's certificates afresh on every handshake (resumed ones
// included) and every later ConnectionState of that connection (r.TLS in
// net/http, caddy-l4's connection states) points at the same certificate,
// so the key names one handshake, not one certificate: a certificate
// verified on one connection policy is never taken as verified on another.
// The digest guards against the address being reused after the memory is
// freed. The record is bounded; when an old connection's record has been
// evicted, its peer reads as unverified (fails closed).

const maxVerifiedRecords = 1 << 16

type verifiedRecord struct {
	digest [32]byte
}

var verified = struct {
	sync.Mutex
	m     map[uintptr]verifiedRecord
	order []uintptr // insertion order, for eviction
	next  int
}{m: make(map[uintptr]verifiedRecord)}

func rawKey(raw []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(raw))) }

// MarkVerified records that the handshake whose leaf DER is leafRaw (the
// very slice crypto/tls gave the verifier) was verified by a live pool.
func MarkVerified(leafRaw []byte) {
	if len(leafRaw) == 0 {
		return
	}
	rec := verifiedRecord{digest: sha256.Sum256(leafRaw)}
	key := rawKey(leafRaw)
	verified.Lock()
	defer verified.Unlock()
	if _, ok := verified.m[key]; !ok {
		if len(verified.order) < maxVerifiedRecords {
			verified.order = append(verified.order, key)
		} else {
			delete(verified.m, verified.order[verified.next])
			verified.order[verified.next] = key
			verified.next = (verified.next + 1) % maxVerifiedRecords
		}
	}
	verified.m[key] = rec
}

// VerifiedLeaf returns the peer's leaf certificate if its chain was
// verified in this handshake, by crypto/tls (VerifiedChains) or by a
// live-pool verifier; otherwise nil.
func VerifiedLeaf(cs *tls.ConnectionState) *x509.Certificate {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil
	}
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		return cs.VerifiedChains[0][0]
	}
	leaf := cs.PeerCertificates[0]
	verified.Lock()
	rec, ok := verified.m[rawKey(leaf.Raw)]
	verified.Unlock()
	if ok && rec.digest == sha256.Sum256(leaf.Raw) {
		return leaf
	}
	return nil
}
