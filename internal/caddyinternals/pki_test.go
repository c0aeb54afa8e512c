package caddyinternals

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/testpki"
)

// provisionedCA is a CA that caddypki itself provisions, with its storage
// in dir: it creates the root and the intermediate there.
func provisionedCA(t *testing.T, id, dir string) *caddypki.CA {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	no := false
	storage, _ := json.Marshal(map[string]string{"module": "file_system", "root": dir})
	ca := &caddypki.CA{StorageRaw: storage, InstallTrust: &no}
	if err := ca.Provision(ctx, id, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	return ca
}

func storedPEM(t *testing.T, st certmagic.Storage, key string) []byte {
	t.Helper()
	data, err := st.Load(context.Background(), key)
	if err != nil {
		t.Fatalf("Caddy's pki storage layout (Caddy %s): %s: %v", CaddyVersion, key, err)
	}
	return data
}

func storedCert(t *testing.T, st certmagic.Storage, key string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(storedPEM(t, st, key))
	if b == nil {
		t.Fatalf("Caddy's pki storage layout (Caddy %s): %s holds no PEM", CaddyVersion, key)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func storedKeyMatches(t *testing.T, st certmagic.Storage, key string, pub crypto.PublicKey) bool {
	t.Helper()
	k, err := certmagic.PEMDecodePrivateKey(storedPEM(t, st, key))
	if err != nil {
		t.Fatal(err)
	}
	signer, ok := k.(crypto.Signer)
	return ok && signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub)
}

// TestPKIStorageLayout: a CA that caddypki provisions keeps its root,
// intermediate and their keys at PKIKey(id, ...), the keys castore reads
// and the cluster writes (an ID that is not storage-safe included).
func TestPKIStorageLayout(t *testing.T) {
	for _, id := range []string{"local", "Team CA/2"} {
		dir := t.TempDir()
		ca := provisionedCA(t, id, dir)
		st := &certmagic.FileStorage{Path: dir}
		if root := storedCert(t, st, PKIKey(id, PKIRootCert)); !root.Equal(ca.RootCertificate()) {
			t.Errorf("Caddy's pki storage layout (Caddy %s): %s is not the CA's root", CaddyVersion, PKIKey(id, PKIRootCert))
		}
		if !storedKeyMatches(t, st, PKIKey(id, PKIRootKey), ca.RootCertificate().PublicKey) {
			t.Errorf("Caddy's pki storage layout (Caddy %s): %s is not the root's key", CaddyVersion, PKIKey(id, PKIRootKey))
		}
		inter := ca.IntermediateCertificateChain()[0]
		if got := storedCert(t, st, PKIKey(id, PKIIntermediateCert)); !got.Equal(inter) {
			t.Errorf("Caddy's pki storage layout (Caddy %s): %s is not the CA's intermediate", CaddyVersion, PKIKey(id, PKIIntermediateCert))
		}
		if !storedKeyMatches(t, st, PKIKey(id, PKIIntermediateKey), inter.PublicKey) {
			t.Errorf("Caddy's pki storage layout (Caddy %s): %s is not the intermediate's key", CaddyVersion, PKIKey(id, PKIIntermediateKey))
		}
	}
}

// TestPKICAFields: what PKICA writes into a provisioned caddypki.CA's
// unexported fields is what Caddy's own getters (those `tls internal` and
// acme_server use) return, and what Get reads back.
func TestPKICAFields(t *testing.T) {
	ca := provisionedCA(t, "local", t.TempDir())
	mem, err := OpenPKICA(ca)
	if err != nil {
		t.Fatalf("caddypki.CA's in-memory fields (Caddy %s): %v", CaddyVersion, err)
	}
	if root, chain, key := mem.Get(); !root.Equal(ca.RootCertificate()) || !chain[0].Equal(ca.IntermediateCertificateChain()[0]) || key != ca.IntermediateKey() {
		t.Fatalf("caddypki.CA's in-memory fields (Caddy %s): Get does not read what Caddy's getters return", CaddyVersion)
	}
	root := testpki.NewCA(t, "new root")
	inter := root.NewIntermediate(t, "new intermediate")
	mem.Set(root.Cert, []*x509.Certificate{inter.Cert}, inter.Key)
	if !ca.RootCertificate().Equal(root.Cert) || !ca.IntermediateCertificateChain()[0].Equal(inter.Cert) || ca.IntermediateKey() != inter.Key {
		t.Fatalf("caddypki.CA's in-memory fields (Caddy %s): Caddy's getters do not return what Set wrote", CaddyVersion)
	}
	if r, c, k := mem.Get(); r != root.Cert || c[0] != inter.Cert || k != inter.Key {
		t.Fatalf("caddypki.CA's in-memory fields (Caddy %s): Get does not read what Set wrote", CaddyVersion)
	}
	if _, err := OpenPKICA(new(caddypki.CA)); err == nil {
		t.Error("a CA that is not provisioned was opened")
	}
}
