package caddyinternals

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"path"
	"reflect"
	"sync"
	"unsafe"

	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/certmagic"
)

// Caddy's pki app keeps each CA in Caddy's storage under PKIPrefix(id), in
// these files; caddypki.CA's storage keys are unexported. The suite reads
// them (castore: pki_live, the internal keystore, the cluster) and the
// cluster writes a renewed intermediate there. TestPKIStorageLayout pins
// them against a CA that caddypki provisions.
const (
	PKIRootCert         = "root.crt"
	PKIRootKey          = "root.key"
	PKIIntermediateCert = "intermediate.crt"
	PKIIntermediateKey  = "intermediate.key"
)

// PKIPrefix is the storage directory of the pki CA called id.
func PKIPrefix(id string) string {
	return path.Join("pki", "authorities", certmagic.StorageKeys.Safe(id))
}

// PKIKey is the storage key of one of the CA's files.
func PKIKey(id, file string) string { return path.Join(PKIPrefix(id), file) }

// PKICA is the in-memory copy of a provisioned caddypki.CA: the root,
// intermediate chain and key that `tls internal` and acme_server issue
// from. Caddy loads it from storage when its config loads and never reads
// storage again; caddypki.CA has no setter. The cluster, which renews the
// intermediate in storage for every node, keeps each node's copy in step
// by writing the CA's unexported fields (root, interChain, interKey) under
// the CA's own mutex (mu), exactly as Caddy's renewCertsForCA does after
// renewing. TestPKICAFields pins the fields against Caddy's own getters.
//
// A reload of the running config would make Caddy read the CA again; why
// the cluster does not take that route: docs/architecture.md.
//
// caddypki.CA's getters have value receivers: they copy the whole struct
// before taking the lock, so any in-place update, Caddy's own renewal
// included, is a data race to Go's race detector. The update happens once
// per renewal and replaces a slice and two pointers; Get reads the fields
// under the lock rather than through those getters.
type PKICA struct {
	mu         **sync.RWMutex
	root       **x509.Certificate
	interChain *[]*x509.Certificate
	interKey   *crypto.Signer
}

// OpenPKICA finds the fields of a provisioned ca that hold its in-memory
// certificates, checked by name and type; an error says which differs.
func OpenPKICA(ca *caddypki.CA) (*PKICA, error) {
	v := reflect.ValueOf(ca).Elem()
	field := func(name string, want reflect.Type) (unsafe.Pointer, error) {
		sf, ok := v.Type().FieldByName(name)
		if !ok {
			return nil, fmt.Errorf("caddypki.CA has no field %s (written against Caddy %s)", name, CaddyVersion)
		}
		if sf.Type != want {
			return nil, fmt.Errorf("caddypki.CA field %s is %s, want %s (written against Caddy %s)", name, sf.Type, want, CaddyVersion)
		}
		return unsafe.Pointer(v.FieldByIndex(sf.Index).UnsafeAddr()), nil
	}
	var f PKICA
	p, err := field("mu", reflect.TypeFor[*sync.RWMutex]())
	if err != nil {
		return nil, err
	}
	f.mu = (**sync.RWMutex)(p)
	if *f.mu == nil {
		return nil, fmt.Errorf("caddypki.CA is not provisioned")
	}
	if p, err = field("root", reflect.TypeFor[*x509.Certificate]()); err != nil {
		return nil, err
	}
	f.root = (**x509.Certificate)(p)
	if p, err = field("interChain", reflect.TypeFor[[]*x509.Certificate]()); err != nil {
		return nil, err
	}
	f.interChain = (*[]*x509.Certificate)(p)
	if p, err = field("interKey", reflect.TypeFor[crypto.Signer]()); err != nil {
		return nil, err
	}
	f.interKey = (*crypto.Signer)(p)
	return &f, nil
}

// Set replaces the in-memory root, intermediate chain and key.
func (f *PKICA) Set(root *x509.Certificate, chain []*x509.Certificate, key crypto.Signer) {
	mu := *f.mu
	mu.Lock()
	defer mu.Unlock()
	*f.root = root
	*f.interChain = append([]*x509.Certificate(nil), chain...)
	*f.interKey = key
}

// Get reads the in-memory root, intermediate chain and key under the lock.
func (f *PKICA) Get() (*x509.Certificate, []*x509.Certificate, crypto.Signer) {
	mu := *f.mu
	mu.RLock()
	defer mu.RUnlock()
	return *f.root, *f.interChain, *f.interKey
}
