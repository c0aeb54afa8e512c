package topology

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// Opening a keystore or truststore decrypts it: a PKCS#12 store costs a
// PBKDF2 derivation (for its MAC, and again for each encrypted bag), slow
// on purpose, and the trustline_topology page, which a site may expose,
// reads every store of the running config on each request. So what a
// store gave is kept, keyed by its content and its settings: an unchanged
// store is decrypted once per process, and a new version of the file
// (any change of its bytes) is read again. Keying by content, not by the
// file's size and mtime, means a result is never stale (a copy that keeps
// the mtime, a rewrite within the mtime's resolution); reading the bytes
// costs little beside the decryption.
//
// The report reads the stores as files, as the CLI does for a config on
// disk: so it shows what a config load would find now (a broken new
// version is a finding), while the running sources keep their last good
// version.

// readKeyStore and readTrustAnchors are the store readers (tests count
// their calls).
var (
	readKeyStore     = material.ReadKeyStore
	readTrustAnchors = material.ReadTrustAnchors
)

// maxCachedStores bounds the stores kept; the least recently used goes
// first.
const maxCachedStores = 64

// storeKey identifies what a store read gives: the file's content, the
// role it is read for and every setting that changes the result
// (passwords as hashes only).
type storeKey struct {
	content   [32]byte
	trust     bool
	passwords [32]byte
	aliases   string
}

// storeRead is one store's result; ready closes once it is in.
type storeRead struct {
	ready chan struct{}
	certs []*x509.Certificate // the trust anchors, or the keystore's leaf
	err   error
	used  uint64
}

var storeCache = struct {
	sync.Mutex
	m     map[storeKey]*storeRead
	clock uint64
}{m: map[storeKey]*storeRead{}}

// resetStoreCache forgets every store read (tests).
func resetStoreCache() {
	storeCache.Lock()
	defer storeCache.Unlock()
	storeCache.m = map[storeKey]*storeRead{}
}

// readStore returns the trust anchors of a truststore (trust) or the leaf
// of a keystore (source names it, for the log), decrypting the store only
// if these bytes with these settings were not read before; reports asking
// at the same time wait for one decryption.
func readStore(trust bool, source string, data []byte, opts material.StoreOptions) ([]*x509.Certificate, error) {
	k := storeKey{
		content:   sha256.Sum256(data),
		trust:     trust,
		passwords: sha256.Sum256([]byte("trustline-topology-store\x00" + opts.Password + "\x00" + opts.KeyPassword)),
		aliases:   strings.Join(opts.Aliases, "\x00"),
	}
	storeCache.Lock()
	storeCache.clock++
	r, ok := storeCache.m[k]
	if !ok {
		evictStore()
		r = &storeRead{ready: make(chan struct{})}
		storeCache.m[k] = r
	}
	r.used = storeCache.clock
	storeCache.Unlock()
	if ok {
		<-r.ready
		return r.certs, r.err
	}
	defer close(r.ready)
	defer func() {
		if p := recover(); p != nil {
			r.certs, r.err = nil, fmt.Errorf("reading the store: %v", p)
		}
	}()
	caddy.Log().Named("trustline.topology").Debug("reading a store for the topology report (once per version)", zap.String("store", source))
	r.certs, r.err = decodeStore(trust, data, opts)
	return r.certs, r.err
}

// decodeStore reads a store once.
func decodeStore(trust bool, data []byte, opts material.StoreOptions) ([]*x509.Certificate, error) {
	if trust {
		return readTrustAnchors(data, opts)
	}
	id, err := readKeyStore(data, opts)
	if err != nil {
		return nil, err
	}
	leaf := id.Leaf
	if leaf == nil && len(id.Certificate) > 0 {
		leaf, err = x509.ParseCertificate(id.Certificate[0])
	}
	if leaf == nil || err != nil {
		return nil, errors.New("no certificate in the keystore")
	}
	return []*x509.Certificate{leaf}, nil
}

// evictStore makes room for one more store: it drops the least recently
// used one once the cache is full. The caller holds the lock.
func evictStore() {
	if len(storeCache.m) < maxCachedStores {
		return
	}
	var oldest storeKey
	first := true
	for k, r := range storeCache.m {
		if first || r.used < storeCache.m[oldest].used {
			oldest, first = k, false
		}
	}
	delete(storeCache.m, oldest)
}
