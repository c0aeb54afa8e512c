package topology

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// A report reads every keystore and truststore of the config, and opening
// one decrypts it (a PKCS#12 store costs PBKDF2 derivations, slow on
// purpose), while the trustline_topology page, which a site may expose,
// makes a report per request. So what a store gave is kept, keyed by its
// content and settings: an unchanged store is decrypted once per process,
// any change of its bytes reads it again (keying by content, not size and
// mtime, is never stale). The stores are read as files, as for a config
// on disk: the report shows what a config load would find now.

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
		if len(storeCache.m) >= maxCachedStores { // the least recently used goes
			delete(storeCache.m, slices.MinFunc(slices.Collect(maps.Keys(storeCache.m)), func(x, y storeKey) int {
				return cmp.Compare(storeCache.m[x].used, storeCache.m[y].used)
			}))
		}
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
	leaf := leafOf(id)
	if leaf == nil {
		return nil, errors.New("no certificate in the keystore")
	}
	return []*x509.Certificate{leaf}, nil
}

// leafOf is the parsed leaf of c, nil when it has none.
func leafOf(c *tls.Certificate) *x509.Certificate {
	if c.Leaf == nil && len(c.Certificate) > 0 {
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		return leaf
	}
	return c.Leaf
}
