package cluster

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/caddyserver/caddy/v2/modules/caddypki"
)

// Keeping Caddy's in-memory copy of a CA in step with storage.
//
// Caddy's pki app loads a CA's root and intermediate into memory when its
// config loads and never reads them again: `tls internal`, `acme_server`
// and its own intermediate maintenance use that copy. Its maintenance
// (every maintenance_interval, default 10m) renews the in-memory
// intermediate when renewal_window_ratio (default 20%) of *that copy's*
// lifetime remains, without a storage lock, and stores the result: on a
// cluster, every node would eventually replace the shared intermediate
// with one of its own, at a time that depends on when it last loaded its
// config.
//
// caddypki.CA has no setter, so the cluster writes the new root,
// intermediate chain and key into the CA's unexported fields, under the
// CA's own mutex, exactly as Caddy's renewCertsForCA does after renewing.
// The field names and types are checked against what this code expects
// (Caddy v2.11.9); if they differ (another Caddy version), nothing is
// written and the cluster logs that Caddy's copy cannot be kept in step.
//
// caddypki.CA's accessors (IntermediateCertificateChain, ...) have value
// receivers: they copy the whole struct before taking the lock, so any
// in-place update, Caddy's own renewal included, is a data race to Go's
// race detector. The update happens once per renewal, replaces a slice of
// the same length and two pointers; this package reads the fields under
// the lock (get) rather than through the accessors.

type caddyCAFields struct {
	mu         **sync.RWMutex
	root       **x509.Certificate
	interChain *[]*x509.Certificate
	interKey   *crypto.Signer
}

// caddyCA finds the fields of ca that hold its in-memory certificates.
func caddyCA(ca *caddypki.CA) (*caddyCAFields, error) {
	v := reflect.ValueOf(ca).Elem()
	field := func(name string, want reflect.Type) (unsafe.Pointer, error) {
		sf, ok := v.Type().FieldByName(name)
		if !ok {
			return nil, fmt.Errorf("caddypki.CA has no field %s", name)
		}
		if sf.Type != want {
			return nil, fmt.Errorf("caddypki.CA field %s is %s, want %s", name, sf.Type, want)
		}
		return unsafe.Pointer(v.FieldByIndex(sf.Index).UnsafeAddr()), nil
	}
	var f caddyCAFields
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

// set replaces the in-memory root, intermediate chain and key.
func (f *caddyCAFields) set(root *x509.Certificate, chain []*x509.Certificate, key crypto.Signer) {
	mu := *f.mu
	mu.Lock()
	defer mu.Unlock()
	*f.root = root
	*f.interChain = append([]*x509.Certificate(nil), chain...)
	*f.interKey = key
}

// get reads the in-memory root, intermediate chain and key under the lock.
func (f *caddyCAFields) get() (*x509.Certificate, []*x509.Certificate, crypto.Signer) {
	mu := *f.mu
	mu.RLock()
	defer mu.RUnlock()
	return *f.root, *f.interChain, *f.interKey
}
