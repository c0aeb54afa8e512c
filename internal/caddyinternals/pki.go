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
// from. Caddy reads them from storage only when its config loads, and
// caddypki.CA has no setter, so the cluster, which renews the intermediate
// in storage for every node, keeps each node's copy in step by writing the
// unexported fields (root, interChain, interKey) under the CA's own mutex
// (mu), as Caddy's renewCertsForCA does (why not a config reload:
// docs/architecture.md). TestPKICAFields pins the fields against Caddy's
// own getters. Those getters copy the whole struct before taking the lock
// (value receivers), a data race with any in-place update to Go's race
// detector: Get reads the fields under the lock instead.
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
	var f PKICA
	for _, fd := range []struct {
		name string
		dst  any // a pointer to the PKICA field to point at the CA's field
	}{{"mu", &f.mu}, {"root", &f.root}, {"interChain", &f.interChain}, {"interKey", &f.interKey}} {
		want := reflect.TypeOf(fd.dst).Elem().Elem()
		sf, ok := v.Type().FieldByName(fd.name)
		if !ok {
			return nil, fmt.Errorf("caddypki.CA has no field %s (written against Caddy %s)", fd.name, CaddyVersion)
		}
		if sf.Type != want {
			return nil, fmt.Errorf("caddypki.CA field %s is %s, want %s (written against Caddy %s)", fd.name, sf.Type, want, CaddyVersion)
		}
		addr := unsafe.Pointer(v.FieldByIndex(sf.Index).UnsafeAddr())
		reflect.ValueOf(fd.dst).Elem().Set(reflect.NewAt(want, addr))
	}
	if *f.mu == nil {
		return nil, fmt.Errorf("caddypki.CA is not provisioned")
	}
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
