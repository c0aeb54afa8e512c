package castore

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/internal/testpki"
)

func put(t *testing.T, st certmagic.Storage, file string, data []byte) {
	t.Helper()
	if err := st.Store(context.Background(), caddyinternals.PKIKey("local", file), data); err != nil {
		t.Fatal(err)
	}
}

// TestLoad: what Load reads, falls back to and refuses.
func TestLoad(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "intermediate")

	if _, err := Load(ctx, st, "local", nil, true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty storage: %v", err)
	}
	// a root configured from files: storage holds only the intermediate
	put(t, st, caddyinternals.PKIIntermediateCert, inter.CertPEM())
	put(t, st, caddyinternals.PKIIntermediateKey, testpki.KeyPEM(inter.Key))
	ca, err := Load(ctx, st, "local", root.Cert, true)
	if err != nil || !ca.Root.Equal(root.Cert) || !ca.Issuer().Equal(inter.Cert) || !KeyMatches(ca.Issuer(), ca.Key) {
		t.Fatalf("with a fallback root: %+v, %v", ca, err)
	}
	if _, err := Load(ctx, st, "local", nil, false); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no root.crt and no fallback: %v", err)
	}

	put(t, st, caddyinternals.PKIRootCert, root.CertPEM())
	ca, err = Load(ctx, st, "local", nil, false)
	if err != nil || ca.Key != nil {
		t.Fatalf("certificates only: %+v, %v", ca, err)
	}
	again, _ := Load(ctx, st, "local", nil, true)
	if again.Digest != ca.Digest {
		t.Error("the digest depends on more than the certificates")
	}

	// the stored root does not sign the intermediate
	other := testpki.NewCA(t, "other root")
	put(t, st, caddyinternals.PKIRootCert, other.CertPEM())
	if _, err := Load(ctx, st, "local", nil, false); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("intermediate of another root: %v", err)
	}
	put(t, st, caddyinternals.PKIRootCert, root.CertPEM())

	// the key of another intermediate (a renewal caught half-way, or broken)
	stranger := root.NewIntermediate(t, "stranger")
	put(t, st, caddyinternals.PKIIntermediateKey, testpki.KeyPEM(stranger.Key))
	if _, err := Load(ctx, st, "local", nil, true); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("mismatched key: %v", err)
	}
	if _, err := Load(ctx, st, "local", nil, false); err != nil {
		t.Fatalf("certificates only, with a mismatched key: %v", err)
	}

	// files cut short: the CA's files are read whole, as every PEM file
	put(t, st, caddyinternals.PKIIntermediateKey, testpki.KeyPEM(inter.Key))
	whole := append(inter.CertPEM(), root.CertPEM()...)
	put(t, st, caddyinternals.PKIIntermediateCert, whole[:len(whole)-100])
	if _, err := Load(ctx, st, "local", nil, false); err == nil || !strings.Contains(err.Error(), caddyinternals.PKIIntermediateCert+": line ") {
		t.Fatalf("intermediate.crt cut inside its last block: %v", err)
	}
	put(t, st, caddyinternals.PKIIntermediateCert, inter.CertPEM())
	put(t, st, caddyinternals.PKIIntermediateKey, append(testpki.KeyPEM(inter.Key), "garbage"...))
	if _, err := Load(ctx, st, "local", nil, true); err == nil || !strings.Contains(err.Error(), caddyinternals.PKIIntermediateKey+": line ") {
		t.Fatalf("intermediate.key with trailing garbage: %v", err)
	}

	put(t, st, caddyinternals.PKIIntermediateCert, []byte("not PEM"))
	if _, err := Load(ctx, st, "local", nil, false); err == nil {
		t.Fatal("garbage intermediate accepted")
	}
}

// TestWatchWithoutNotifications: a storage that announces nothing.
func TestWatchWithoutNotifications(t *testing.T) {
	cancel, ok := Watch(&certmagic.FileStorage{Path: t.TempDir()}, "local", func() {})
	if ok {
		t.Error("the file storage claims to announce changes")
	}
	cancel()
}
