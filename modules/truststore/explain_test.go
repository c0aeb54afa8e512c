package truststore

import (
	"bytes"
	"context"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/verify"
)

// TestLiveTrustTraced: under explain, live_trust reaches the verdict it
// reaches at a handshake and tells it (the chain built, or why none was),
// without logging it or moving trustline_client_verdicts_total.
func TestLiveTrustTraced(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	verify.RegisterMetrics(ctx)
	verdicts := func() string {
		mfs, err := ctx.GetMetricsRegistry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			if mf.GetName() == "trustline_client_verdicts_total" {
				b.WriteString(mf.String())
			}
		}
		return b.String()
	}
	trusted := testpki.NewCA(t, "trusted")
	inter := trusted.NewIntermediate(t, "trusted inter")
	var logged bytes.Buffer
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.DebugLevel))
	v := &LiveTrust{pool: staticPool{trusted.Pool()}, logger: logger}
	alice := inter.Issue(t, testpki.CN("alice"), testpki.ClientOnly())

	before := verdicts()
	for _, tc := range []struct {
		name   string
		certs  []*x509.Certificate
		reason string
		detail string
	}{
		{"admitted", []*x509.Certificate{alice.Cert, inter.Cert}, "", "chain of 3 built"},
		{"intermediate not sent", []*x509.Certificate{alice.Cert}, verify.ReasonUnknownAuthority, `intermediate not sent: the leaf's issuer "CN=trusted inter"`},
	} {
		raw := make([][]byte, len(tc.certs))
		for i, c := range tc.certs {
			raw[i] = append([]byte(nil), c.Raw...)
		}
		tr := new(verify.Trace)
		detach := verify.AttachTrace(raw[0], tr)
		err := v.VerifyClientCertificate(raw, nil)
		detach()
		if verify.ReasonOf(err) != tc.reason {
			t.Fatalf("%s: %v", tc.name, err)
		}
		steps := tr.Steps()
		if len(steps) != 1 || steps[0].Name != "live_trust" || steps[0].Reason != tc.reason || !strings.Contains(steps[0].Detail, tc.detail) {
			t.Fatalf("%s: %+v", tc.name, steps)
		}
	}
	if after := verdicts(); after != before || logged.Len() != 0 {
		t.Fatalf("explain counted or logged:\n%s\n%s", after, logged.String())
	}
	// outside explain, the same refusal is counted and logged
	if err := v.VerifyClientCertificate([][]byte{alice.Cert.Raw}, nil); err == nil {
		t.Fatal("admitted without its intermediate")
	}
	if !strings.Contains(verdicts(), `value:"unknown_authority"`) || !strings.Contains(logged.String(), `"reason":"unknown_authority"`) {
		t.Fatalf("a real refusal was not counted and logged:\n%s", logged.String())
	}
}
