package truststore

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/trustline/trustline/internal/testpki"
)

func poolCtx(t *testing.T) caddy.Context {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

// TestPoolAfterCleanup: a handshake of a config that
// is being cleaned up still asks the pool source of that config; once
// Provision succeeded, CertPool and Certificates answer with the last good
// pool, never nil (nil roots mean the system roots to crypto/x509), both
// while a newer config still shares the source and after the last one
// stopped it.
func TestPoolAfterCleanup(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "pool ca")
	leaf := ca.Issue(t, testpki.CN("client"), testpki.ClientOnly())
	pemFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	jks := testpki.WriteFile(t, dir, "trust.jks", testpki.JKSTruststore(t, map[string]*x509.Certificate{"ca": ca.Cert}, "storepass"))

	type source interface {
		caddy.Provisioner
		caddy.CleanerUpper
		caddytls.CA
		Certificates() []*x509.Certificate
	}
	for name, mk := range map[string]func() source{
		"bundle":     func() source { return &Bundle{Paths: []string{pemFile}} },
		"truststore": func() source { return &TrustStore{Path: jks, Password: "storepass"} },
	} {
		t.Run(name, func(t *testing.T) {
			old, next := mk(), mk()
			if err := old.Provision(poolCtx(t)); err != nil {
				t.Fatal(err)
			}
			if err := next.Provision(poolCtx(t)); err != nil { // an admin reload
				t.Fatal(err)
			}
			check := func(when string, s source) {
				t.Helper()
				pool := s.CertPool()
				if pool == nil {
					t.Fatalf("%s: CertPool() is nil (the system roots)", when)
				}
				if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
					t.Fatalf("%s: a client of the pool's CA refused: %v", when, err)
				}
				if certs := s.Certificates(); len(certs) != 1 || !certs[0].Equal(ca.Cert) {
					t.Fatalf("%s: Certificates() = %v", when, certs)
				}
			}
			if err := old.Cleanup(); err != nil {
				t.Fatal(err)
			}
			check("old config cleaned up, new one running", old)
			check("new config", next)
			if err := next.Cleanup(); err != nil {
				t.Fatal(err)
			}
			check("every config cleaned up", old)
			check("every config cleaned up", next)
		})
	}
}
