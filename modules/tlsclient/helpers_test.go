package tlsclient

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
	dto "github.com/prometheus/client_model/go"

	"github.com/trustline/trustline/internal/testpki"
)

func testCtx(t testing.TB) caddy.Context {
	t.Helper()
	base, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(base)
	t.Cleanup(cancel)
	return ctx
}

func failures(upstream, reason string) float64 {
	var m dto.Metric
	_ = handshakeFailures.WithLabelValues(upstream, reason).Write(&m)
	return m.GetCounter().GetValue()
}

type pki struct {
	backendCA, proxyCA, foreignCA *testpki.CA
	serverLeaf                    *testpki.Leaf
	dir                           string
}

func newPKI(t testing.TB) *pki {
	p := &pki{
		backendCA: testpki.NewCA(t, "backend root"),
		proxyCA:   testpki.NewCA(t, "proxy root"),
		foreignCA: testpki.NewCA(t, "foreign root"),
		dir:       t.TempDir(),
	}
	p.serverLeaf = p.backendCA.NewIntermediate(t, "backend inter").Issue(t,
		testpki.CN("backend"), testpki.IP("127.0.0.1"), testpki.DNS("backend.test"),
		testpki.URI("spiffe://example.org/backend"), testpki.ServerOnly())
	return p
}

func (p *pki) trustFile(t testing.TB) string {
	return testpki.WriteFile(t, p.dir, "backend-ca.pem", p.backendCA.CertPEM())
}

func (p *pki) identity(t testing.TB, name string, ca *testpki.CA, opts ...testpki.Option) (map[string]string, *testpki.Leaf) {
	leaf := ca.Issue(t, append([]testpki.Option{testpki.CN(name), testpki.ClientOnly()}, opts...)...)
	cert, key := leaf.WriteFiles(t, p.dir, name)
	return map[string]string{"source": "pem", "certificate": cert, "key": key}, leaf
}

func filePool(path string) map[string]any {
	return map[string]any{"provider": "file", "pem_files": []string{path}}
}
