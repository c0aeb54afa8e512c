package keystore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
)

func pkiCA(t *testing.T, ctx caddy.Context, id string) *caddypki.CA {
	t.Helper()
	app, err := ctx.App("pki")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := app.(*caddypki.PKI).GetCA(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestInternalIssuesAndShares(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtxIn(t, dir)
	js := mustJSON(map[string]any{"source": "internal", "spiffe_id": "spiffe://example.org/proxy", "dns_names": []string{"proxy.internal"}})
	src, err := load(t, ctx, js, UsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	id := src.KeyPair()
	leaf := id.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/proxy" || leaf.DNSNames[0] != "proxy.internal" || leaf.Subject.CommonName != "proxy.internal" {
		t.Fatalf("names: %v %v %q", leaf.URIs, leaf.DNSNames, leaf.Subject.CommonName)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("EKU %v, want clientAuth only", leaf.ExtKeyUsage)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 24*time.Hour || life > 24*time.Hour+time.Minute {
		t.Fatalf("lifetime %s, want 24h (+ backdate)", life)
	}
	ca := pkiCA(t, ctx, "local")
	roots := x509.NewCertPool()
	roots.AddCert(ca.RootCertificate())
	inter := x509.NewCertPool()
	for _, der := range id.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("does not chain to the pki CA: %v", err)
	}

	// the same source in another config of this process: the same identity
	again, err := load(t, ctx, js, UsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	if serial(again.KeyPair()) != serial(id) {
		t.Fatal("a second user of the same source got another certificate")
	}

	// another node sharing the storage picks up the stored identity; its
	// usage pool is its own, so force a fresh source by clearing ours
	first := src.(*Internal)
	key := first.Key()
	ctx2 := testCtxIn(t, dir)
	first.Release()
	again.(*Internal).Release()
	popIssuer(key, first.issuer)
	popIssuer(key, again.(*Internal).issuer)
	other, err := load(t, ctx2, js, UsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	if serial(other.KeyPair()) != serial(id) {
		t.Fatalf("a node sharing storage issued its own certificate (%s, want %s)", serial(other.KeyPair()), serial(id))
	}
}

func TestInternalRenewsWhenDue(t *testing.T) {
	ctx := testCtx(t)
	js := mustJSON(map[string]any{"source": "internal", "common_name": "renew-me", "lifetime": int64(time.Minute)})
	src, err := load(t, ctx, js, UsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	in := src.(*Internal)
	first := serial(in.KeyPair())
	var changed bool
	in.OnChange(func() { changed = true })

	// a stored certificate two-thirds into its life, as another node (or
	// this one, a while ago) left it
	ca := pkiCA(t, ctx, "local")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(4242), NotBefore: now.Add(-45*time.Second - backdate), NotAfter: now.Add(15 * time.Second),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.IntermediateCertificateChain()[0], key.Public(), ca.IntermediateKey())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range ca.IntermediateCertificateChain() {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	st := findState(t, in)
	if err := ctx.Storage().Store(context.Background(), st, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := in.Src.Reload(); err != nil {
		t.Fatal(err)
	}
	got := serial(in.KeyPair())
	if got == first || got == "4242" || !changed {
		t.Fatalf("after the stored certificate fell due: serial %s (first %s), changed %v; want a new one", got, first, changed)
	}
	if left := time.Until(in.KeyPair().Leaf.NotAfter); left < 50*time.Second {
		t.Fatalf("renewed certificate has %s left, want about a minute", left)
	}
}

// findState returns the storage key of in's identity.
func findState(t *testing.T, in *Internal) string {
	t.Helper()
	keys, err := in.issuer.storage.List(context.Background(), "trustline/keystore/internal/local", false)
	if err != nil || len(keys) != 1 {
		t.Fatalf("stored identities: %v, %v", keys, err)
	}
	return keys[0]
}

func TestInternalBadInput(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct{ js, want string }{
		{`{"source":"internal","common_name":"x","ca":"nope"}`, `ca "nope": no such certificate authority in the pki app (configured: local, other`},
		{`{"source":"internal"}`, "at least one name"},
		{`{"source":"internal","spiffe_id":"spiffe://example.org"}`, "needs a path"},
		{`{"source":"internal","spiffe_id":"https://example.org/x"}`, "spiffe_id"},
		{`{"source":"internal","dns_names":["a b"]}`, "not a DNS name"},
		{`{"source":"internal","common_name":"x","lifetime":1000000000}`, "too short"},
	} {
		_, err := load(t, ctx, tc.js, UsageClientAuth)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.want)
		}
	}
}

func TestRenewAt(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(backdate + 90*time.Minute)}
	if got, want := renewAt(leaf), nb.Add(backdate+60*time.Minute); !got.Equal(want) {
		t.Fatalf("renewAt = %s, want %s", got, want)
	}
}
