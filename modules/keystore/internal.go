package keystore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/certmagic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/material/castore"
)

func init() {
	caddy.RegisterModule(Internal{})
}

// Internal is an identity issued by one of Caddy's own `pki` CAs (default
// `local`) for the names given: a SPIFFE ID (as the URI SAN), DNS names and
// a common name. The certificate (ECDSA P-256) and its key are kept in
// Caddy's storage, so that nodes sharing storage share the CA and the
// identity. It is signed by the CA's intermediate as storage holds it
// (whichever node renewed it; Caddy's in-memory copy when storage does not
// hold the CA), and issued again when that intermediate changes. It is
// renewed in the background at two-thirds of its lifetime, under a storage
// lock (one node issues, the others pick it up), never while a request
// waits. A failed renewal is logged and retried; the current identity stays
// in force until then.
type Internal struct {
	// CA is the ID of the pki app's certificate authority. Default: local.
	CA string `json:"ca,omitempty"`
	// SPIFFEID is put in the certificate as its only URI SAN, e.g.
	// `spiffe://example.org/proxy`. Optional.
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// DNSNames are put in the certificate as DNS SANs. Optional.
	DNSNames []string `json:"dns_names,omitempty"`
	// CommonName is the subject common name. Default: the first DNS name,
	// else empty (SPIFFE identities need none).
	CommonName string `json:"common_name,omitempty"`
	// Lifetime of each certificate. Default: 24h. It is renewed when a
	// third of it remains, and never outlives the CA's intermediate.
	Lifetime caddy.Duration `json:"lifetime,omitempty"`
	// Usage is the extended key usage put in the certificate and checked:
	// client_auth, server_auth or any (both). Set by the directive that
	// uses the keystore. Default: any.
	Usage string `json:"usage,omitempty"`

	live
	issuer  *issuer
	unwatch func()
}

// CaddyModule returns the Caddy module information.
func (Internal) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".internal",
		New: func() caddy.Module { return new(Internal) },
	}
}

const (
	defaultLifetime = 24 * time.Hour
	// backdate absorbs clock skew between this node and its peers.
	backdate = 30 * time.Second
	// minLifetime keeps renewal ahead of the periodic check.
	minLifetime = 30 * time.Second
)

// issuer is what a config gives an internal source to issue with: its CA
// and its storage. Every config that uses the same source registers its
// own, and the shared source issues with the newest one still live, so it
// never uses a storage that a cleaned-up config closed.
type issuer struct {
	caID    string
	ca      *caddypki.CA
	storage certmagic.Storage
	logger  *zap.Logger
}

var (
	issuersMu sync.Mutex
	issuers   = map[string][]*issuer{}
)

func pushIssuer(key string, is *issuer) {
	issuersMu.Lock()
	defer issuersMu.Unlock()
	issuers[key] = append(issuers[key], is)
}

func popIssuer(key string, is *issuer) {
	issuersMu.Lock()
	defer issuersMu.Unlock()
	issuers[key] = slices.DeleteFunc(issuers[key], func(x *issuer) bool { return x == is })
	if len(issuers[key]) == 0 {
		delete(issuers, key)
	}
}

func currentIssuer(key string) *issuer {
	issuersMu.Lock()
	defer issuersMu.Unlock()
	if list := issuers[key]; len(list) > 0 {
		return list[len(list)-1]
	}
	return nil
}

// Provision gets the CA, loads the identity from storage or issues it (an
// error fails the config load) and starts the renewal checks.
func (in *Internal) Provision(ctx caddy.Context) error {
	if in.CA == "" {
		in.CA = caddypki.DefaultCAID
	}
	if in.Lifetime == 0 {
		in.Lifetime = caddy.Duration(defaultLifetime)
	}
	usage, err := ParseUsage(in.Usage)
	if err != nil {
		return fmt.Errorf("keystore internal: %w", err)
	}
	tmpl, err := in.template(usage)
	if err != nil {
		return fmt.Errorf("keystore internal: %w", err)
	}
	pkiApp, err := ctx.App("pki")
	if err != nil {
		return fmt.Errorf("keystore internal: loading the pki app: %w", err)
	}
	pki := pkiApp.(*caddypki.PKI)
	if _, ok := pki.CAs[in.CA]; !ok && in.CA != caddypki.DefaultCAID {
		known := slices.Sorted(maps.Keys(pki.CAs))
		if !slices.Contains(known, caddypki.DefaultCAID) {
			known = append(known, caddypki.DefaultCAID+" (default)")
		}
		return fmt.Errorf("keystore internal: ca %q: no such certificate authority in the pki app (configured: %s)", in.CA, strings.Join(known, ", "))
	}
	ca, err := pki.GetCA(ctx, in.CA)
	if err != nil {
		return fmt.Errorf("keystore internal: ca %q: %w", in.CA, err)
	}
	names := in.names()
	sum := sha256.Sum256([]byte(strings.Join([]string{in.CA, in.SPIFFEID, strings.Join(in.DNSNames, ","), in.CommonName, time.Duration(in.Lifetime).String(), string(usage)}, "|")))
	id := hex.EncodeToString(sum[:8])
	key := "keystore|internal|" + id
	in.issuer = &issuer{caID: in.CA, ca: ca, storage: ctx.Storage(), logger: ctx.Logger()}
	pushIssuer(key, in.issuer)
	lifetime := time.Duration(in.Lifetime)
	st := &internalState{
		key:        key,
		storageKey: "trustline/keystore/internal/" + in.CA + "/" + id + ".pem",
		lockName:   "trustline_keystore_internal_" + in.CA + "_" + id,
		template:   tmpl,
		lifetime:   lifetime,
		usage:      usage,
		names:      names,
	}
	err = in.acquire(ctx, material.Spec[*tls.Certificate]{
		Name: "internal:" + in.CA + ":" + names,
		Key:  key,
		Poll: max(time.Second, min(5*time.Second, lifetime/20)),
		Load: st.load,
	})
	if err != nil {
		popIssuer(key, in.issuer)
		return fmt.Errorf("loading keystore internal (%s): %w", names, err)
	}
	// a storage that announces changes (storage redis) brings a renewed
	// intermediate at once; polling is the fallback
	src := in.Src
	in.unwatch, _ = castore.Watch(ctx.Storage(), in.CA, func() { go src.Reload() })
	return nil
}

// Cleanup stops the renewal checks (when no other config uses the source).
func (in *Internal) Cleanup() error {
	if in.unwatch != nil {
		in.unwatch()
	}
	if in.issuer != nil {
		popIssuer(in.Key(), in.issuer)
	}
	in.Release()
	return nil
}

func (in *Internal) names() string {
	var parts []string
	if in.SPIFFEID != "" {
		parts = append(parts, in.SPIFFEID)
	}
	parts = append(parts, in.DNSNames...)
	if in.CommonName != "" && !slices.Contains(in.DNSNames, in.CommonName) {
		parts = append(parts, "CN="+in.CommonName)
	}
	return strings.Join(parts, ",")
}

// template checks the names and builds the certificate template.
func (in *Internal) template(usage Usage) (*x509.Certificate, error) {
	if in.SPIFFEID == "" && len(in.DNSNames) == 0 && in.CommonName == "" {
		return nil, errors.New("give the identity at least one name: spiffe_id, dns or common_name")
	}
	if lt := time.Duration(in.Lifetime); lt < minLifetime {
		return nil, fmt.Errorf("lifetime %s is too short (minimum %s)", lt, minLifetime)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: in.CommonName},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		DNSNames:              in.DNSNames,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if tmpl.Subject.CommonName == "" && len(in.DNSNames) > 0 {
		tmpl.Subject.CommonName = in.DNSNames[0]
	}
	if in.SPIFFEID != "" {
		id, err := spiffeid.FromString(in.SPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("spiffe_id %q: %w", in.SPIFFEID, err)
		}
		if id.Path() == "" {
			return nil, fmt.Errorf("spiffe_id %q: a workload ID needs a path (spiffe://%s/...)", in.SPIFFEID, id.TrustDomain())
		}
		tmpl.URIs = []*url.URL{id.URL()}
	}
	for _, n := range in.DNSNames {
		if n == "" || strings.ContainsAny(n, " /:@") {
			return nil, fmt.Errorf("dns name %q is not a DNS name", n)
		}
	}
	switch usage {
	case UsageClientAuth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case UsageServerAuth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return tmpl, nil
}

// internalState is what the shared source's loader needs; it holds no
// config state (the issuer is looked up on every load).
type internalState struct {
	key, storageKey, lockName string
	template                  *x509.Certificate
	lifetime                  time.Duration
	usage                     Usage
	names                     string
}

// load returns the stored identity while it is good, and otherwise issues,
// stores and returns a new one. It runs in Provision and on every periodic
// check, never on a request.
func (st *internalState) load() (*material.Loaded[*tls.Certificate], error) {
	is := currentIssuer(st.key)
	if is == nil {
		return nil, errors.New("keystore internal: no live config holds this identity")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if l, err := st.stored(ctx, is); err != nil || l != nil {
		return l, err
	}
	if err := is.storage.Lock(ctx, st.lockName); err != nil {
		return nil, fmt.Errorf("keystore internal (%s): locking storage: %w", st.names, err)
	}
	defer func() {
		if err := is.storage.Unlock(context.Background(), st.lockName); err != nil {
			is.logger.Error("unlocking storage", zap.String("lock", st.lockName), zap.Error(err))
		}
	}()
	// another node may have renewed it while we waited for the lock
	if l, err := st.stored(ctx, is); err != nil || l != nil {
		return l, err
	}
	ca, err := is.signingCA(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("keystore internal (%s): %w", st.names, err)
	}
	bundle, err := st.issue(is, ca)
	if err != nil {
		return nil, fmt.Errorf("keystore internal (%s): issuing from ca %q: %w", st.names, is.caID, err)
	}
	if err := is.storage.Store(ctx, st.storageKey, bundle); err != nil {
		return nil, fmt.Errorf("keystore internal (%s): storing %s: %w", st.names, st.storageKey, err)
	}
	l, err := st.parse(bundle, is, ca.Root)
	if err != nil {
		return nil, fmt.Errorf("keystore internal (%s): the new certificate: %w", st.names, err)
	}
	leaf := l.Value.Leaf
	is.logger.Info("issued identity",
		zap.String("names", st.names), zap.String("ca", is.caID),
		zap.String("serial", material.SerialString(leaf)), material.TimeField("not_after", leaf.NotAfter))
	return l, nil
}

// stored returns the stored identity when it is usable and not due for
// renewal; nil (and no error) when a new one must be issued.
func (st *internalState) stored(ctx context.Context, is *issuer) (*material.Loaded[*tls.Certificate], error) {
	data, err := is.storage.Load(ctx, st.storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keystore internal (%s): reading %s from storage: %w", st.names, st.storageKey, err)
	}
	ca, err := is.signingCA(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("keystore internal (%s): %w", st.names, err)
	}
	l, err := st.parse(data, is, ca.Root)
	if err != nil {
		is.logger.Warn("stored identity unusable; issuing a new one",
			zap.String("names", st.names), zap.String("storage_key", st.storageKey), zap.Error(err))
		return nil, nil
	}
	if time.Now().After(renewAt(l.Value.Leaf)) {
		return nil, nil
	}
	if chain := l.Certificates; len(chain) < 2 || !chain[1].Equal(ca.Issuer()) {
		is.logger.Debug("the CA's intermediate was renewed; issuing the identity from the new one",
			zap.String("names", st.names), zap.String("ca", is.caID),
			zap.String("intermediate_serial", material.SerialString(ca.Issuer())))
		return nil, nil
	}
	return l, nil
}

// signingCA is the CA as storage holds it (see castore), or Caddy's
// in-memory copy when storage does not hold the CA (a CA with a storage of
// its own, or a root configured from files). withKey reads the
// intermediate's key too.
func (is *issuer) signingCA(ctx context.Context, withKey bool) (*castore.CA, error) {
	ca, err := castore.Load(ctx, is.storage, is.caID, nil, withKey)
	if errors.Is(err, fs.ErrNotExist) {
		chain := is.ca.IntermediateCertificateChain()
		if len(chain) == 0 || is.ca.IntermediateKey() == nil {
			return nil, errors.New("the CA has no intermediate certificate")
		}
		return &castore.CA{ID: is.caID, Root: is.ca.RootCertificate(), Intermediates: chain, Key: is.ca.IntermediateKey()}, nil
	}
	return ca, err
}

// renewAt is two-thirds into the certificate's lifetime (counted from its
// issuance, not its backdated start).
func renewAt(leaf *x509.Certificate) time.Time {
	issued := leaf.NotBefore.Add(backdate)
	return issued.Add(leaf.NotAfter.Sub(issued) * 2 / 3)
}

// parse reads a stored bundle (key, leaf, intermediates) and checks that it
// chains to the CA's root and is not expired.
func (st *internalState) parse(data []byte, is *issuer, root *x509.Certificate) (*material.Loaded[*tls.Certificate], error) {
	blocks, err := material.DecodePEM(data)
	if err != nil {
		return nil, err
	}
	var keyDER []byte
	var chain []*x509.Certificate
	for _, block := range blocks {
		switch block.Type {
		case "PRIVATE KEY":
			keyDER = block.Bytes
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, err
			}
			chain = append(chain, c)
		}
	}
	if keyDER == nil || len(chain) == 0 {
		return nil, errors.New("stored bundle lacks its key or certificate")
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, err
	}
	cert, err := material.NewKeyPair(key, chain)
	if err != nil {
		return nil, err
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("not issued by ca %q (was its storage reset?): %w", is.caID, err)
	}
	certs, err := checkKeyPair(cert, st.usage, "keystore internal ("+st.names+")", false, is.logger)
	if err != nil {
		return nil, err
	}
	return &material.Loaded[*tls.Certificate]{Value: cert, Certificates: certs, Digest: sha256.Sum256(data)}, nil
}

// issue makes a new key and certificate signed by the CA's intermediate
// and returns them as a PEM bundle.
func (st *internalState) issue(is *issuer, ca *castore.CA) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Truncate(time.Second)
	tmpl := *st.template // a nil SerialNumber: crypto/x509 draws a random one
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(st.lifetime)
	if interNA := ca.Issuer().NotAfter; tmpl.NotAfter.After(interNA) {
		is.logger.Warn("identity lifetime cut to the CA intermediate's not-after",
			zap.String("names", st.names), material.TimeField("not_after", interNA))
		tmpl.NotAfter = interNA
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Issuer(), key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range ca.Intermediates {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes(), nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens. Arguments
// are shorthand for names: a spiffe:// URI is the SPIFFE ID, anything else
// a DNS name.
//
// Syntax:
//
//	... internal [<spiffe_id|dns_name>...] {
//		ca          <id>
//		spiffe_id   <spiffe://trust.domain/path>
//		dns         <names...>
//		common_name <name>
//		lifetime    <duration>
//	}
func (in *Internal) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // source name
	for d.NextArg() {
		if err := in.addName(d, d.Val()); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("keystore internal: duplicate option '%s'", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("keystore internal: %s needs a value", opt)
		}
		if opt != "dns" && len(args) > 1 {
			return d.Errf("keystore internal: %s takes one value", opt)
		}
		switch opt {
		case "ca":
			in.CA = args[0]
		case "spiffe_id":
			if in.SPIFFEID != "" {
				return d.Errf("keystore internal: spiffe_id given twice (a certificate holds one SPIFFE ID)")
			}
			in.SPIFFEID = args[0]
		case "dns":
			in.DNSNames = append(in.DNSNames, args...)
		case "common_name":
			in.CommonName = args[0]
		case "lifetime":
			dur, err := caddy.ParseDuration(args[0])
			if err != nil {
				return d.Errf("keystore internal: lifetime '%s': %v", args[0], err)
			}
			if dur < minLifetime {
				return d.Errf("keystore internal: lifetime %s is too short (minimum %s)", dur, minLifetime)
			}
			in.Lifetime = caddy.Duration(dur)
		default:
			return d.Errf("keystore internal: unknown option '%s' (expected ca, spiffe_id, dns, common_name or lifetime)", opt)
		}
	}
	if in.SPIFFEID == "" && len(in.DNSNames) == 0 && in.CommonName == "" {
		return d.Err("keystore internal: give the identity at least one name: spiffe_id, dns or common_name")
	}
	return nil
}

func (in *Internal) addName(d *caddyfile.Dispenser, name string) error {
	if strings.HasPrefix(name, "spiffe://") {
		if in.SPIFFEID != "" {
			return d.Errf("keystore internal: two SPIFFE IDs (%s, %s): a certificate holds one", in.SPIFFEID, name)
		}
		if _, err := spiffeid.FromString(name); err != nil {
			return d.Errf("keystore internal: spiffe_id '%s': %v", name, err)
		}
		in.SPIFFEID = name
		return nil
	}
	in.DNSNames = append(in.DNSNames, name)
	return nil
}

// Interface guards
var (
	_ Source                = (*Internal)(nil)
	_ caddy.Provisioner     = (*Internal)(nil)
	_ caddy.CleanerUpper    = (*Internal)(nil)
	_ caddyfile.Unmarshaler = (*Internal)(nil)
)
