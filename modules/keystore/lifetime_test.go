package keystore

import (
	"crypto/tls"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/internal/testpki"
)

// TestIdentityAfterCleanup: an upstream handshake of a
// config that is being cleaned up (an admin reload does not wait for the
// old config's requests) still asks that config's keystore for its
// identity: it gets the last good one, never nil and never a panic, both
// while a newer config shares the source and after the last one stopped it.
func TestIdentityAfterCleanup(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "proxy ca")
	leaf := ca.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	certFile, keyFile := leaf.WriteFiles(t, dir, "proxy")
	p12 := testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, leaf, "pw", false))
	jks := testpki.WriteFile(t, dir, "proxy.jks", testpki.JKSKeystore(t, "proxy", leaf, "storepass", "storepass"))
	storage := t.TempDir()

	for name, js := range map[string]string{
		"pem":      mustJSON(map[string]string{"source": "pem", "certificate": certFile, "key": keyFile}),
		"pkcs12":   mustJSON(map[string]string{"source": "pkcs12", "path": p12, "password": "pw"}),
		"jks":      mustJSON(map[string]string{"source": "jks", "path": jks, "password": "storepass"}),
		"internal": mustJSON(map[string]any{"source": "internal", "spiffe_id": "spiffe://example.org/proxy"}),
	} {
		t.Run(name, func(t *testing.T) {
			oldCtx, cancelOld := caddy.NewContext(testCtxIn(t, storage))
			defer cancelOld()
			newCtx, cancelNew := caddy.NewContext(testCtxIn(t, storage)) // an admin reload
			defer cancelNew()
			old, err := load(t, oldCtx, js, UsageClientAuth)
			if err != nil {
				t.Fatal(err)
			}
			next, err := load(t, newCtx, js, UsageClientAuth)
			if err != nil {
				t.Fatal(err)
			}
			want := serial(old.KeyPair())
			check := func(when string, s Source) {
				t.Helper()
				var id *tls.Certificate
				func() {
					defer func() {
						if rec := recover(); rec != nil {
							t.Fatalf("%s: KeyPair() panicked: %v", when, rec)
						}
					}()
					id = s.KeyPair()
				}()
				if id == nil || len(id.Certificate) == 0 || id.PrivateKey == nil {
					t.Fatalf("%s: Identity() = %v", when, id)
				}
				if got := serial(id); got != want {
					t.Fatalf("%s: serial %s, want the last good %s", when, got, want)
				}
			}
			cancelOld() // Cleanup of the old config's modules
			check("old config cleaned up, new one running", old)
			check("new config", next)
			cancelNew()
			check("every config cleaned up", old)
			check("every config cleaned up", next)
		})
	}
}
